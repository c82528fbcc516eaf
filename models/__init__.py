"""The shipped default models (see README.md here); installed as `stkcodec.models`."""
