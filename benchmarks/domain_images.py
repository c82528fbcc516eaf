"""Non-game images for benchmarks/domain_probe.py: the README table's nine (scaled to at most 800 px
wide, transparency on white), three synthetic ones, and every other distinct image of the Rust
docs and matplotlib's sample data on this machine (the extra set)."""
import hashlib
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

RUST = Path("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html")
MPL = Path(matplotlib.get_data_path()) / "sample_data"
NINE = [RUST / "embedded-book/assets/f3.jpg", RUST / "embedded-book/assets/verify.jpeg", MPL / "grace_hopper.jpg",
        RUST / "rustc/images/llvm-cov-show-01.png", RUST / "embedded-book/assets/nrf52-memory-map.png",
        RUST / "book/img/trpl14-01.png", RUST / "cargo/images/Cargo-Logo-Small.png", MPL / "Minduka_Present_Blue_Pack.png"]

def flat(path):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA"); bg = Image.new("RGBA", im.size, "white"); im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
    if im.width > 800:
        im = im.resize((800, round(im.height * 800 / im.width)), Image.LANCZOS)
    return im

def synthetic():
    rng = np.random.default_rng(0)
    art = Image.new("RGB", (400, 300), "white"); d = ImageDraw.Draw(art)
    for _ in range(60):
        d.line([tuple(rng.integers(0, 400, 1)) + tuple(rng.integers(0, 300, 1)), tuple(rng.integers(0, 400, 1)) + tuple(rng.integers(0, 300, 1))],
               fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(1, 4)))
    for _ in range(15):
        x, y = int(rng.integers(0, 350)), int(rng.integers(0, 250))
        d.ellipse([x, y, x + int(rng.integers(10, 80)), y + int(rng.integers(10, 80))], outline=(0, 0, 0), width=2)
    text = Image.new("RGB", (480, 320), "white"); d = ImageDraw.Draw(text)
    words = "the quick brown fox jumps over the lazy dog 0123456789 stkc codec frames".split()
    for row in range(24):
        d.text((6, 4 + row * 13), " ".join(rng.choice(words, 9)), fill="black", font=ImageFont.load_default())
    f = np.fft.fftfreq(360)[:, None] ** 2 + np.fft.fftfreq(480)[None, :] ** 2
    f[0, 0] = 1
    field = np.stack([np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((360, 480))) / f)) for _ in range(3)], -1)
    field = (field - field.min((0, 1))) / np.ptp(field, (0, 1))
    photo = Image.fromarray((field * 255).astype(np.uint8))
    return {"synthetic-line-art.png": art, "synthetic-text.png": text, "synthetic-photo.png": photo}

for folder in ("others9", "extra"):
    Path(folder).mkdir(exist_ok=True)
seen = set()
for path in NINE:
    im = flat(path); im.save(f"others9/{path.stem}.png"); seen.add(path.name)
flat(RUST / "cargo/images/Cargo-Logo-Small.png").convert("L").save("others9/cargo-logo-gray.png")
for name, im in synthetic().items():
    im.save(f"others9/{name}")
hashes = set()
for path in sorted(list(RUST.rglob("*.png")) + list(RUST.rglob("*.jp*g")) + list(MPL.glob("*.png")) + list(MPL.glob("*.jpg"))):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.name in seen or digest in hashes or "favicon" in path.name:
        continue
    hashes.add(digest)
    im = flat(path)
    if im.width * im.height < 64 * 64:
        continue
    im.save(f"extra/{path.parent.name}-{path.stem}.png")
print(len(list(Path("others9").iterdir())), len(list(Path("extra").iterdir())))
