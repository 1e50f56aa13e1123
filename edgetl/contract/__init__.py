"""The contracts every stage agrees on, and nothing else: a leaf package.

    formats.py     the one backend table: name, suffix, model file, layout, precisions,
                   the extras that export and run it, the exporter and the runner
    preprocess.py  the one preprocessing record (and its reference implementation)
    images.py      decoding any photo to upright 8-bit RGB, and the image-size limits
    sidecar.py     an artifact's model.json: labels, preprocessing, tensors, golden samples
    artifact.py    what else an artifact folder carries: held-out samples, its parity summary
    run_dir.py     the run directory `edgetl finetune` writes and later stages read
    fields.py      one way to read an untrusted field and say which field of which file is wrong

It imports nothing of edgetl's stages (tests/test_layers.py): train, export, parity,
bench, deploy and the runtime all depend on it, never the other way round.
"""
