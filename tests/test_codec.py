import dataclasses
import io
import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from stkcodec import bitstream
from stkcodec.codec import Codec
from stkcodec.windows import image_tokens
from stkcodec.coder import coding_chunks, decode_grids, encode_grids
from stkcodec.errors import BadInputError, ModelMismatchError
from stkcodec.imageio import GRAY_MODES, to_8bit
from stkcodec.zoo import CodecModel

from .conftest import make_image, tiny_models


@pytest.fixture(scope="module")
def codec(tiny_codec_model):
    return Codec(tiny_codec_model)


def test_exact_token_round_trip(codec):
    image = make_image(150, 100)
    data = codec.compress(image)
    (header, tokens), = codec.tokens_many([data])
    expected = image_tokens(codec.model.tokenizer, [image])[0]
    assert torch.equal(tokens, expected)
    assert header.width == 150 and header.height == 100 and header.grid == (20, 30)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (151, 101), (160, 7), (333, 250)])
def test_odd_sizes_round_trip_to_exact_shape(codec, size):
    image = make_image(*size, seed=size[0])
    decoded = codec.decompress(codec.compress(image))
    assert decoded.size == size and decoded.mode == "RGB"


def test_tiles_of_several_shapes_and_chunks_decode(tiny_codec_model):
    exact = tiny_codec_model.exact_prior
    grids = [torch.randint(0, 64, (9, 23)), torch.randint(0, 64, (9, 23)), torch.randint(0, 64, (4, 5))]
    tile = (2, 3)  # many tiles: edge tiles of 3 shapes and several chunks of CHUNK_TILES
    assert len(coding_chunks(9, 23, *tile)) > 4
    payloads = encode_grids(exact, grids, tile)
    decoded = decode_grids(exact, payloads, [tuple(g.shape) for g in grids], tile)
    assert all(torch.equal(a, b) for a, b in zip(grids, decoded))


def test_batch_size_does_not_change_bytes(codec):
    images = [make_image(150, 100, seed=s) for s in range(5)] + [make_image(40, 30, seed=9)]
    together = codec.compress_many(images)
    alone = [codec.compress(image) for image in images]
    assert together == alone
    assert [im.tobytes() for im in codec.decompress_many(together)] == [codec.decompress(d).tobytes() for d in alone]


def test_thread_count_does_not_change_bytes(codec):
    image = make_image(150, 100, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.compress(image)
        torch.set_num_threads(max(2, threads))
        many = codec.compress(image)
        decoded = codec.decompress(one)
    finally:
        torch.set_num_threads(threads)
    assert one == many
    assert decoded.tobytes() == codec.decompress(many).tobytes()


def test_file_size_close_to_cross_entropy(codec):
    image = make_image(150, 100, seed=4)
    data = codec.compress(image)
    tokens = image_tokens(codec.model.tokenizer, [image])[0]
    logits = codec.model.prior(tokens[None])
    bits = torch.nn.functional.cross_entropy(logits[0], tokens.flatten(), reduction="sum").item() / np.log(2)
    payload_bits = 8 * (len(data) - bitstream.parse(data)[0].size)
    assert payload_bits <= bits * 1.01 + 64


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1", "I;16", "I", "F"])
def test_any_mode_converts_to_8_bits(codec, mode):
    gray = np.asarray(make_image(30, 20, seed=1, mode="L")).astype(np.int64)
    deep = {"I;16": lambda: Image.fromarray((gray * 257).astype(np.uint16)),
            "I": lambda: Image.fromarray((gray * 257).astype(np.int32)),
            "F": lambda: Image.fromarray(gray.astype(np.float32) / 255)}
    image = deep[mode]() if mode in deep else make_image(30, 20, seed=1, mode=mode)
    converted = to_8bit(image)
    assert converted.mode == ("L" if mode in GRAY_MODES else "RGB") and converted.size == (30, 20)
    assert codec.decompress(codec.compress(converted)).mode == converted.mode


def test_sixteen_bit_scales_to_eight_bit():
    array = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    gray = to_8bit(Image.fromarray(array))
    assert np.array_equal(np.asarray(gray), np.arange(256).reshape(16, 16))


def test_exif_orientation_is_applied():
    image = make_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(buffer.getvalue())) as stored:
        assert to_8bit(stored).size == (20, 40)


def test_other_model_is_refused(codec):
    data = codec.compress(make_image(20, 20))
    other = Codec(CodecModel(*tiny_models(seed=1)))
    with pytest.raises(ModelMismatchError, match="unknown model"):
        other.decompress(data)


def test_header_claiming_huge_image_is_refused_before_allocating(codec):
    header, payload = bitstream.parse(codec.compress(make_image(20, 20)))
    claimed = dataclasses.replace(header, width=65535, height=65535).pack_file(payload)
    with pytest.raises(BadInputError, match="exceeds"):
        codec.decompress(claimed)


def test_truncation_at_every_byte_is_a_clean_error(codec):
    data = codec.compress(make_image(30, 20))
    for length in range(len(data)):
        with pytest.raises(BadInputError, match=r"^input: [a-z]"):  # one line that names the file
            codec.decompress(data[:length])


def test_random_corruption_is_a_clean_error_or_the_same_image(codec):
    """The checksum covers the header and the tokens: damage decodes to the original or not at all."""
    data = codec.compress(make_image(30, 20))
    original = codec.decompress(data).tobytes()
    rng = np.random.default_rng(0)
    for _ in range(200):
        corrupt = bytearray(data)
        for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
            corrupt[position] ^= 1 << int(rng.integers(0, 8))
        try:
            image = codec.decompress(bytes(corrupt))
        except BadInputError:
            continue
        except ModelMismatchError:
            continue
        assert image.tobytes() == original  # a flip the range decoder never reads (the payload's last bits)


def test_pillow_opens_stkc_files(tmp_path, codec, monkeypatch):
    import stkcodec.codec

    monkeypatch.setattr(stkcodec.codec, "default_codec", lambda: codec)
    image = make_image(31, 17)
    path = tmp_path / "x.stkc"
    path.write_bytes(codec.compress(image))
    with Image.open(path) as opened:
        assert opened.format == "STKC" and opened.size == (31, 17)
        opened.load()
        assert opened.tobytes() == codec.decompress(path.read_bytes()).tobytes()
    path.write_bytes(codec.compress(image.convert("L")))
    with Image.open(path) as opened:
        assert opened.mode == "L"
        opened.load()
        assert opened.tobytes() == codec.decompress(path.read_bytes()).tobytes()


def test_trailing_zero_words_are_never_read(codec):
    data = codec.compress(make_image(30, 20))
    header, payload = bitstream.parse(data)
    [(_, tokens)] = codec.tokens_many([data])
    padded = dataclasses.replace(header, payload_bytes=header.payload_bytes + 8).sealed(tokens.numpy())
    assert codec.decompress(padded.pack() + payload + bytes(8)).tobytes() == codec.decompress(data).tobytes()


def test_every_header_field_is_covered_by_the_checksum(codec):
    """A damaged width, height, tile or colour (or a version-3 file's level) never decodes quietly
    to another image."""
    data = codec.compress(make_image(30, 20))
    header, payload = bitstream.parse(data)
    version_3 = dataclasses.replace(header, version=3).sealed(codec.tokens_many([data])[0][1].numpy())
    assert np.array_equal(codec.decompress(version_3.pack_file(payload)), codec.decompress(data))
    for original, changes in [(header, change) for change in ({"width": 29}, {"height": 19}, {"tile_rows": 3},
                                                              {"tile_cols": 5}, {"colour": bitstream.GRAY})] + [
            (version_3, {"level": 1}), (version_3, {"width": 29})]:
        damaged = dataclasses.replace(original, **changes).pack() + payload
        with pytest.raises(BadInputError, match="checksum|corrupt|damaged"):
            codec.decompress(damaged)


def test_a_flipped_model_id_names_no_installed_model(codec):
    data = bytearray(codec.compress(make_image(30, 20)))
    data[5] ^= 0x10
    with pytest.raises(ModelMismatchError, match="unknown model .*file damaged, or made by a model that is not installed"):
        codec.decompress(bytes(data))


def test_gray_images_come_back_gray(codec):
    gray = make_image(30, 20).convert("L")
    data = codec.compress(gray)
    assert bitstream.parse(data)[0].mode == "L"
    decoded = codec.decompress(data)
    assert decoded.mode == "L" and decoded.size == gray.size
    assert decoded.tobytes() == codec.decompress(codec.compress(gray.convert("RGB"))).convert("L").tobytes()
    assert codec.decompress(codec.compress(make_image(30, 20))).mode == "RGB"


def test_version_1_files_still_parse():
    header = bitstream.Header(b"\x01\x02\x03\x04", 30, 20, 5, 4, 6, 4, 0, version=1)
    parsed, payload = bitstream.parse(header.pack() + bytes(4))
    assert parsed == header and payload == bytes(4) and parsed.mode == "RGB" and header.size == 23
    tokens = np.arange(24).reshape(4, 6)
    assert header.checksum(tokens) == zlib.crc32(tokens.astype("<u2").tobytes())  # version 1: the tokens alone


def test_uvarints_are_leb128_in_their_shortest_form():
    for value in (0, 1, 127, 128, 300, 16383, 16384, 65535, 2**30):
        packed = bitstream.uvarint(value)
        assert len(packed) == max(1, -(-value.bit_length() // 7))
        assert bitstream.read_uvarint(packed + b"\xff", 0, 2**30, "f", "x") == (value, len(packed))
    assert bitstream.uvarint(300) == bytes([0xAC, 0x02])
    for data, message in ((b"\x80\x00", "shortest form"), (b"\x81", "truncated"), (b"\x80\x80\x80\x01", "longer than 3"),
                          (bitstream.uvarint(65536), "exceeds 65535")):
        with pytest.raises(BadInputError, match=message):
            bitstream.read_uvarint(data, 0, 65535, "f", "width")


def test_version_4_headers_of_a_frame_and_its_segment(tiny_layered_model):
    codec = Codec(tiny_layered_model)
    frame = make_image(150, 100)
    level_1, level_2 = codec.compress(frame, quality=1), codec.compress(frame, quality=2)
    header, payload = bitstream.parse(level_2)
    assert header.version == 4 and header.size == 20 + (header.payload_bytes // 4 > 127)
    assert header.enhancement.size - header.enhancement.payload_bytes == 6 + (header.enhancement.payload_bytes // 4 > 127)
    assert level_2[: header.base_bytes] == level_1 and header.describe()["header_bytes"] == header.size
    # the same payload in a version-3 header: 25 bytes, the same picture (older layered files: their vectors)
    old = dataclasses.replace(header, version=3, enhancement=None).sealed(codec.tokens_many([level_1])[0][1].numpy())
    assert old.size == 25 and bitstream.parse(old.pack_file(payload)) == (old, payload)
    assert np.array_equal(codec.decompress(old.pack_file(payload)), codec.decompress(level_1))


def test_payload_too_short_for_the_claimed_size_is_refused_before_decoding(codec):
    data = codec.compress(make_image(30, 20))
    header, payload = bitstream.parse(data)
    huge = bitstream.Header(header.model_id, 65535, 65535 // 64, header.patch_size, header.tile_rows,
                            header.tile_cols, header.payload_bytes, header.token_crc32)
    with pytest.raises(BadInputError, match="too short"):
        codec.decompress(huge.pack() + payload)


def test_default_codec_decodes_files_of_every_shipped_model(tmp_path, monkeypatch):
    from stkcodec import zoo
    from stkcodec.checkpoint import save_model

    index = {"default": "new", "models": {}}
    for name, seed in [("old", 1), ("new", 2)]:
        tokenizer, prior = tiny_models(seed)
        save_model(tokenizer, tmp_path / name / "tokenizer.pt")
        save_model(prior, tmp_path / name / "prior.pt", provenance={"train": {"tokenizer_id": tokenizer.model_id}})
        index["models"][name] = CodecModel(tokenizer, prior).model_id.hex()
    (tmp_path / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(zoo, "models_dir", lambda: tmp_path)
    zoo.shipped.cache_clear()
    try:
        image = make_image(40, 30, seed=4)
        old_file, new_file = Codec("old").compress(image), Codec("new").compress(image)
        assert old_file[4:8] != new_file[4:8]  # two model ids
        default = Codec("default")
        assert default.model.model_id.hex() == index["models"]["new"]
        decoded = default.decompress_many([old_file, new_file, old_file])
        assert decoded[0].tobytes() == Codec("old").decompress(old_file).tobytes() == decoded[2].tobytes()
        assert decoded[1].tobytes() == Codec("new").decompress(new_file).tobytes()
        with pytest.raises(ModelMismatchError, match="made by shipped model old"):  # a named model decodes its own files only
            Codec("new").decompress(old_file)
        index["models"]["new"] = "00000000"
        (tmp_path / "index.json").write_text(json.dumps(index))
        zoo.shipped.cache_clear()
        with pytest.raises(ModelMismatchError, match="00000000"):  # weights that are not what the index says
            Codec("new")
    finally:
        zoo.shipped.cache_clear()


def test_progress_counts_every_step_of_a_large_image(codec, tiny_layered_model):
    """Every stage a user waits for: the prior's tiles and the tokenizer's windows, and at a
    level above 1 the enhancement's tiles and the base picture's windows."""
    image = make_image(160, 110)
    coded, decoded = [], []
    data = codec.compress_many([image], on_tiles=coded.append)[0]
    codec.decompress_many([data], on_tiles=decoded.append)
    assert codec.tiles(160, 110) == bitstream.parse(data)[0].describe()["tiles"] > 1
    assert sum(coded) == codec.steps(160, 110, 1, encoding=True) == codec.tiles(160, 110) + 1  # one window
    assert sum(decoded) == codec.steps(160, 110, 1, encoding=False) == sum(coded)
    layered = Codec(tiny_layered_model)
    coded, decoded = [], []
    data = layered.compress_many([image], quality=3, on_tiles=coded.append)[0]
    layered.decompress_many([data], on_tiles=decoded.append)
    assert sum(coded) == layered.steps(160, 110, 3, encoding=True) == 2 * layered.tiles(160, 110) + 2
    assert sum(decoded) == layered.steps(160, 110, 3, encoding=False) == 2 * layered.tiles(160, 110) + 1


def test_errors_collect_codes_the_good_images_and_names_the_bad(tiny_codec_model):
    """errors="collect": one bad image (here over max_pixels) gets its error, named as the caller
    named it; the others are coded as they would be alone. The same for decoding."""
    from stkcodec.errors import StkcError

    codec = Codec(tiny_codec_model, max_pixels=20_000)
    good = [make_image(150, 100, seed=1), make_image(40, 30, seed=2)]
    mixed = [good[0], make_image(200, 150, seed=3), good[1]]
    results = codec.compress_many(mixed, names=["a.png", "big.png", "c.png"], errors="collect", quality=1)
    assert isinstance(results[1], StkcError) and str(results[1]).startswith("big.png: 200x150 pixels exceeds")
    assert [results[0], results[2]] == [codec.compress(image, quality=1) for image in good]
    with pytest.raises(StkcError, match="big.png"):
        codec.compress_many(mixed, names=["a.png", "big.png", "c.png"], quality=1)
    decoded = codec.decompress_many([results[0], b"STKC broken", results[2]], ["a", "b", "c"], errors="collect")
    assert isinstance(decoded[1], StkcError) and str(decoded[1]).startswith("b:")
    assert decoded[0].size == (150, 100) and decoded[2].size == (40, 30)
    with pytest.raises(ValueError, match="collect"):
        codec.decompress_many([results[0]], errors="ignore")


def test_a_codec_model_refuses_parts_that_were_not_made_together():
    """CodecModel's refusals: a prior of another vocabulary, a prior or an enhancement layer
    trained over another tokenizer, an enhancement layer of another patch size."""
    import types

    from stkcodec.enhancer import Enhancer
    from stkcodec.errors import ModelMismatchError
    from stkcodec.prior import PriorConfig, build_prior

    from .conftest import TINY_ENHANCER, TINY_PRIOR, tiny_enhancer

    tokenizer, prior = tiny_models()
    with pytest.raises(ModelMismatchError, match="prior predicts 32 symbols, tokenizer makes 64"):
        CodecModel(tokenizer, build_prior(PriorConfig(**{**TINY_PRIOR.__dict__, "vocab_size": 32})))
    elsewhere = {"train": {"tokenizer_id": "f" * 64}}
    prior.provenance = types.MappingProxyType(elsewhere)
    with pytest.raises(ModelMismatchError, match="prior was trained on tokens of tokenizer ffffffffffff"):
        CodecModel(tokenizer, prior)
    _, prior = tiny_models()
    enhancer = tiny_enhancer()
    enhancer.provenance = types.MappingProxyType(elsewhere)
    with pytest.raises(ModelMismatchError, match="enhancement layer was trained over tokenizer ffffffffffff"):
        CodecModel(tokenizer, prior, enhancer)
    with pytest.raises(ModelMismatchError, match="enhancement layer of patch 4"):
        CodecModel(tokenizer, prior, Enhancer(dataclasses.replace(TINY_ENHANCER, patch_size=4)))


def test_compress_many_checks_every_size_before_coding(tiny_codec_model):
    from stkcodec.errors import BadInputError

    codec = Codec(tiny_codec_model)
    for image, why in ((Image.new("RGB", (65536, 1)), "has a side over 65535 pixels"),
                       (Image.new("RGB", (0, 5)), "empty image")):
        with pytest.raises(BadInputError, match=f"^wide: .*{why}|^wide: {why}"):
            codec.compress_many([make_image(10, 10), image], names=["fine", "wide"])


def test_banded_base_picture_gives_the_whole_pictures_pixels(tiny_codec_model, monkeypatch):
    """`BasePicture` (a tall image's base, computed band by band as an encoder reads it) crops to
    what the whole picture holds, across band borders and past the bottom edge, keeping two bands."""
    from stkcodec import windows

    monkeypatch.setattr(windows, "BAND_ROWS", 8)  # a multiple of WINDOW is what progress needs; not here
    tokenizer = tiny_codec_model.tokenizer
    image = make_image(40, 97, seed=3)
    grid = windows.image_tokens(tokenizer, [image])[0]
    whole = np.asarray(windows.token_images(tokenizer, [grid], image.size)[0]).astype(int)
    banded = windows.BasePicture(tokenizer, grid, image.size)
    for box in [(0, 0, 40, 97), (5, 30, 35, 45), (0, 39, 40, 41), (0, 80, 40, 97), (10, 0, 11, 97)]:
        got = np.asarray(banded.crop(box)).astype(int)
        assert got.shape == (box[3] - box[1], box[2] - box[0], 3)
        assert np.abs(got - whole[box[1] : box[3], box[0] : box[2]]).max() <= 1
        assert len(banded.bands) <= 2
    cut = windows.crop_padded(banded, 90, 100, 30, 45)  # past the bottom and right edges: padded as a whole picture is
    expected = windows.crop_padded(Image.fromarray(whole.astype(np.uint8)), 90, 100, 30, 45)
    assert cut.shape == expected.shape == (10, 15, 3)
    assert np.abs(cut.astype(int) - expected).max() <= 1


def test_a_tall_images_banded_base_codes_and_counts_its_progress(tiny_layered_model, monkeypatch):
    """A level-3 file of an image taller than a band decodes, its steps add up as `steps` says,
    and the banded base changes no byte against the whole picture (here they are equal)."""
    from stkcodec import windows

    image = make_image(60, 330, seed=4)  # 66 grid rows
    monkeypatch.setattr(windows, "BAND_ROWS", 32)
    codec = Codec(tiny_layered_model)
    coded = []
    banded = codec.compress_many([image], quality=3, on_tiles=coded.append)[0]
    assert sum(coded) == codec.steps(60, 330, 3, encoding=True)
    monkeypatch.setattr(windows, "BAND_ROWS", 10_000)  # one band: the whole picture
    assert codec.compress_many([image], quality=3)[0] == banded
    assert codec.decompress(banded).size == image.size
