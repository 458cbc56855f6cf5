"""The bad-input catalogue: every entry goes through the real command-line entry point
(`fewshot_exp.__main__.cli` with its argv) and must end with exit code != 0, exactly one line on stderr
that starts with `error:` and names the problem, no traceback, and no damage to output already on disk.

The same list, with the exact messages, is the troubleshooting page's catalogue (docs/troubleshooting.md)
(`FEWSHOT_PRINT_CATALOGUE=1 pytest -s tests/test_bad_inputs.py | grep -o "CATALOGUE.*"` prints its rows)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import call_cli, run_cli

TINY = [
    "train.episodes=4",
    "train.val_every=2",
    "train.val_episodes=2",
    "eval.episodes=2",
    "encoder.hidden=8",
    "encoder.out_channels=8",
    "train.checkpoint_every=2",
]

# (overrides, a piece of the one-line message). {run} is a finished run dir, {empty} an empty dir, {zips} a dir
# with a corrupt images_background_small1.zip, {file} a plain file, {foreign} a run dir whose last.pt is not ours,
# {truncated} one whose last.pt is cut short, {marker} one whose last.pt has our format marker and nothing else,
# {cut_best} one whose best.pt is cut short, {no_last} one without last.pt (a finished run, checkpoints pruned),
# {on_cuda} one whose last.pt says it was written on a GPU, {bad_overrides} one whose .hydra/overrides.yaml is not YAML.
CATALOGUE = {  # section -> its entries; make test runs the first FAST_PER_SECTION of each, make test-full all
    "config values out of range": [
        (["episode.k_shot=0"], "episode.k_shot must be positive, got 0"),
        (["episode.n_way=1"], "n_way must be at least 2"),
        (["episode.n_query=-1"], "episode.n_query must be positive, got -1"),
        (["episode.tasks=0"], "episode.tasks must be positive, got 0"),
        (["train.episode.n_way=0"], "train.episode.n_way must be positive, got 0"),
        (["train.episodes=-5"], "train.episodes must be positive, got -5"),
        (["train.lr=0"], "train.lr must be positive, got 0.0"),
        (["train.lr_gamma=-1"], "train.lr_gamma must be positive"),
        (["train.weight_decay=-0.1"], "train.weight_decay must be >= 0"),
        (["train.weight_decay=nan"], "train.weight_decay must be >= 0 and finite, got nan"),
        (["seed=-1"], "seed must be between 0 and 4294967295 (2**32 - 1), got -1"),
        (["seed=4294967296"], "seed must be between 0 and 4294967295 (2**32 - 1), got 4294967296"),
        (["eval.seed=-2"], "eval.seed must be between 0 and 4294967295"),
        (["train.val_every=0"], "train.val_every must be positive"),
        (["train.checkpoint_every=0"], "train.checkpoint_every must be positive"),
        (["eval.episodes=0"], "eval.episodes must be positive"),
        (["eval.batch_images=0"], "eval.batch_images must be positive"),
        (["distance.temperature=0"], "distance.temperature must be positive"),
        (["dataset.image_size=0"], "dataset.image_size must be positive"),
        (["dataset.val_alphabets=0"], "dataset.val_alphabets must be at least 1"),
        (["dataset.val_alphabets=40"], "dataset.val_alphabets=40 leaves no training alphabet"),
        (["algorithm.members=0"], "algorithm.members must be positive, got 0"),
        (["dataset.renderings=1"], "renderings"),
        (["algorithm=hallucination", "algorithm.n_hallucinated=-1"], "algorithm.n_hallucinated must be >= 0"),
        (["algorithm=maml", "algorithm.inner_steps=-1"], "algorithm.inner_steps must be >= 0"),
        (["train.lr=nan"], "train.lr must be positive, got nan"),
        (["train.lr=inf"], "train.lr must be positive and finite, got inf"),
        (["encoder.hidden=0"], "encoder.hidden must be positive, got 0"),
        (["encoder.downsample=avgpool"], "Invalid value 'avgpool', expected one of [maxpool, stride]"),
        (["algorithm=relation", "encoder.downsample=stride"], "algorithm.pooled_blocks needs max-pooling blocks"),
        (["dataset.image_size=15"], "dataset.image_size=15 is too small for encoder=conv4"),
        (["encoder.pooled_blocks=5"], "encoder.pooled_blocks=5 must be in 0..4 or null (= all 4)"),
        (["encoder.downsample=stride", "encoder.pooled_blocks=3"], "encoder.pooled_blocks=3 must be in 0..4 or null"),
        (["algorithm=relation", "encoder.pooled_blocks=3"], "encoder.pooled_blocks is not read by algorithm=relation"),
        (["algorithm=relation", "algorithm.pooled_blocks=5"], "algorithm.pooled_blocks must be in 0..4"),
        (["algorithm=maml", "algorithm.embedding_dim=10"], "algorithm.embedding_dim=10 but the encoder gives 8-d"),
        (["algorithm=maml", "algorithm.image_size=84"], "algorithm.image_size=84 differs from dataset.image_size=28"),
        (["eval.dataset_root=/no/such"], "eval.dataset_root is set but eval.dataset is not"),
        (["eval.dataset=svhn"], "eval.dataset_root is not set: set eval.dataset_root=/path/to/svhn"),
        (["dataset=folder", "dataset.root={empty}", "dataset.split_files.train=a.txt"], "val, test not set"),
    ],
    "wrong types, unknown options and keys": [
        (
            ["episode.k_shot=abc"],
            "Value 'abc' of type 'str' could not be converted to Integer; full_key: episode.k_shot",
        ),
        (["device=gpu"], "Invalid value 'gpu', expected one of [auto, cpu, cuda]"),
        (["train.lr=fast"], "full_key: train.lr"),
        (["logger.mode=sometimes"], "full_key: logger.mode"),
    ],
    "typos: refused with the nearest valid names, with or without `+`": [
        (["episode.k_shots=5"], "unknown key episode.k_shots; did you mean episode.k_shot?"),
        (["+train.lrr=0.1"], "unknown key train.lrr; did you mean train.lr?"),
        (
            ["algorithm=protonett"],
            "algorithm=protonett is not an option of algorithm; did you mean protonet? (options: ",
        ),
        (["episode.kshot=5"], "unknown key episode.kshot; did you mean episode.k_shot?"),
        (["+episode.kshot=5"], "unknown key episode.kshot; did you mean episode.k_shot?"),
        (["algoritm=maml"], "unknown key algoritm; did you mean algorithm?"),
        (
            ["algorithm=maml", "algorithm.inner_stepz=2"],
            "unknown key algorithm.inner_stepz; did you mean algorithm.inner_steps?",
        ),
        (
            ["algorithm=nosuchthing"],
            "algorithm=nosuchthing is not an option of algorithm (options: fomaml, hallucination",
        ),
        (["distance=manhattan"], "distance=manhattan is not an option of distance"),
    ],
    "choices the algorithm does not read": [
        (["algorithm=maml", "distance=cosine"], "distance=cosine: MAML does not use the distance group, so it would"),
        (["algorithm=relation", "distance.temperature=2"], "distance.temperature=2: RelationNetwork does not use the"),
        (
            ["-m", "algorithm=protonet,fomaml", "distance=l2,cosine"],
            "distance=l2,cosine: MAML does not use the distance",
        ),
    ],
    "a sweep is checked once, before any job starts (in this process, a joblib worker or a cluster job)": [
        (
            ["-m", "hydra/launcher=parallel", "seed=0,1", "+train.lrr=0.1"],
            "unknown key train.lrr; did you mean train.lr?",
        ),
        (["-m", "episode.k_shot=1,2", "+episode.kshot=5"], "unknown key episode.kshot; did you mean episode.k_shot?"),
        (
            ["-m", "algorithm=maml,protonett"],
            "algorithm=protonett is not an option of algorithm; did you mean protonet?",
        ),
        (["-m", "hydra/launcher=slurm", "seed=0,1"], "hydra/launcher=slurm submits to SLURM, but"),
        (["experiment=nosuch"], "experiment=nosuch is not an option of experiment"),
        (["dataset=omniglot", "dataset.root={empty}", "dataset.background=small3"], "full_key: dataset.background"),
    ],
    "episode shapes a split cannot fill": [
        (["episode.n_way=500"], "n_way=500 is more than the 101 classes of the validation split"),
        (
            ["episode.k_shot=40"],
            "k_shot + n_query = 40 + 15 is more than the 50 images per class of the train split; "
            "use episode.n_query=10 (or a k_shot of at most 35)",
        ),
        (["train.episode.n_way=900"], "n_way=900 is more than the 844 classes of the train split"),
        (
            ["train.episode.k_shot=30", "train.episode.n_query=21"],
            "30 + 21 is more than the 50 images per class of the train split; use train.episode.n_query=20",
        ),
        (["episode.tasks=10000000"], "episode.tasks=10000000 needs 2920.6 GiB for one training batch's images alone"),
        (["dataset.image_size=100000"], "dataset.image_size=100000: 72250 images of 1x100000x100000 need about"),
        (  # checked before the pickles are read (the files here are placeholders)
            ["dataset=cifar_fs", "dataset.root={pickles}", "dataset.image_size=5000"],
            "dataset.image_size=5000: 60000 images of 3x5000x5000 need about",
        ),
        (
            ["dataset=miniimagenet", "dataset.root={pickles}", "dataset.image_size=5000"],
            "dataset.image_size=5000: 60000 images of 3x5000x5000 need about",
        ),
        (["train.episode.tasks=10000000"], "train.episode.tasks=10000000 needs 2920.6 GiB"),
    ],
    "paths and files": [
        (["dataset=omniglot"], "dataset.root is not set"),
        (["dataset=omniglot", "dataset.root=/no/such/dir"], "dataset.root=/no/such/dir does not exist"),
        (["dataset=omniglot", "dataset.root={empty}"], "images_background"),
        (["dataset=omniglot", "dataset.root={zips}", "dataset.background=small1"], "images_background_small1.zip"),
        (["dataset.root={file}"], "{file}"),
        (["eval.lake_runs=/no/such/runs"], "/no/such/runs"),
        (["eval.lake_runs={empty}"], "no one-shot runs"),
    ],
    "image datasets and cross-domain test sets": [
        (["dataset=cifar_fs", "dataset.root={empty}"], "cifar-100-python/train not found"),
        (["dataset=miniimagenet", "dataset.root={empty}"], "expected mini-imagenet-cache-train.pkl"),
        (["dataset=folder", "dataset.root={empty}"], "no class folders with images"),
        (
            ["dataset=folder", "dataset.root={empty}", "dataset.split=[0.7,0.2,0.2]"],
            "summing to 1, got [0.7, 0.2, 0.2]",
        ),
        (["dataset=cifar100_random", "dataset.root={empty}", "dataset.split_classes=[80,10,5]"], "summing to 100"),
        (["dataset=svhn"], "dataset=svhn is a cross-domain test set"),
        (["eval.dataset=svhn", "eval.dataset_root={empty}"], "test_32x32.mat not found"),
        (["eval.dataset=nosuch"], "eval.dataset=nosuch is not one of"),
        (["eval.dataset=glyphs"], "eval.dataset=glyphs holds 844 of the training split's classes"),
        (["eval.dataset=digits", "episode.n_way=12"], "n_way=12 is more than the 10 classes of the test split"),
        (
            ["dataset.augment.enabled=true", "dataset.augment.scale=[1.2,0.9]"],
            "dataset.augment.scale must be [min, max]",
        ),
        (
            ["dataset.augment.enabled=true", "dataset.augment.elastic=2"],
            "dataset.augment.elastic must be in [0, 1], got 2",
        ),
        (
            ["eval.tta=-1"],
            "eval.tta=-1 needs a positive number of views and dataset.augment settings that change an image",
        ),
    ],
    "encoders, algorithms, plots, sweeps": [
        (["algorithm=multiproto", "algorithm.per_class=0"], "algorithm.per_class must be positive, got 0"),
        (["algorithm=multiproto", "algorithm.penalty=l3"], "Invalid value 'l3', expected one of [l1, l2]"),
        (["viz_projection=umap"], "Invalid value 'umap', expected one of [pca, tsne]"),
        (["hydra/launcher=nosuch"], "hydra/launcher=nosuch is not an option of hydra/launcher (options: "),
        (["hparams_search=nosuch"], "hparams_search=nosuch is not an option of hparams_search"),
    ],
    "run and sweep dirs": [
        (["hydra.run.dir={file}/run"], "not a directory: {file}/run"),
        (["hydra.run.dir={empty}/" + "x" * 300], "file name too long: {empty}/xxxxxxxx"),
        (["hydra.run.dir="], "hydra.run.dir is empty: give a directory, or leave hydra.run.dir out for the default"),
        (["-m", "seed=0,1", "hydra.sweep.dir=''"], "hydra.sweep.dir is empty"),
        (["dataset.root=/a", "b"], "for details; a value with spaces must be quoted for the shell and for Hydra"),
    ],
    "resuming a run": [
        (["hydra.run.dir={run}"], "already holds a run (last.pt, best.pt, results.json): pass resume=true"),
        (["resume={run}", "train.lr=0.5"], "the config differs from the checkpoint's in train.lr"),
        (["resume={truncated}"], "last.pt is unreadable or not a safe tensor checkpoint"),
        (["hydra.run.dir={no_last}"], "already holds a run (best.pt, results.json): pass resume=true"),
        (["resume=/no/such/run"], "resume=/no/such/run: not a run dir"),
        (["resume={foreign}"], "last.pt is not a fewshot-exp checkpoint"),
        (["resume={marker}"], "last.pt is incomplete: it has no 'algorithm', 'optimizer'"),
        (["resume={on_cuda}"], "last.pt: it was written by a run on cuda and this one is on cpu; its random states"),
        (["resume={cut_best}"], "best.pt is unreadable or not a safe tensor checkpoint"),
        (["resume={run}", "hydra.run.dir={empty}"], "continues that run in its own dir; drop hydra.run.dir"),
        (["-m", "resume={run}"], "continues that run in its own dir; drop -m"),
        (["resume={bad_overrides}"], "overrides.yaml is unreadable (ParserError): it is not the list of overrides"),
    ],
    "evaluating and initialising from checkpoints": [
        (["eval_only=true"], "eval_only=true needs checkpoint=<run dir or .pt file>"),
        (["eval_only=true", "checkpoint=/no/such.pt"], "checkpoint=/no/such.pt: no such file"),
        (["eval_only=true", "checkpoint={run}", "eval.k_shots=[1,40]"], "k_shot + n_query = 40 + 15 is more than"),
        (["eval_only=true", "checkpoint={foreign}/last.pt"], "last.pt is not a fewshot-exp checkpoint"),
        (
            ["eval_only=true", "checkpoint={run}", "eval.n_ways=[3,0]"],
            "eval.n_ways=[3, 0]: every value must be at least 2",
        ),
        (["eval_only=true", "checkpoint={run}", "eval.n_ways=[1]"], "eval.n_ways=[1]: every value must be at least 2"),
        (
            ["eval.k_shots=[1,5]"],
            "eval.k_shots and eval.n_ways make a test-shot curve of a trained model: add eval_only",
        ),
        (["checkpoint={run}"], "checkpoint={run} is read only by eval_only=true: add eval_only=true to evaluate it"),
        (
            ["eval_only=true", "checkpoint={run}", "hydra.run.dir={run}"],
            "already holds a run (last.pt, best.pt, results.json)",
        ),
        (["eval_only=true", "checkpoint={marker}/last.pt"], "last.pt is incomplete: it has no 'algorithm', 'config'"),
        (["train.init_from=/no/such/run"], "train.init_from=/no/such/run: no such file"),
        (["train.init_from={empty}"], "train.init_from={empty}: no such file (the run dir has no best.pt)"),
        (["train.init_from={truncated}/last.pt"], "last.pt is unreadable or not a safe tensor checkpoint"),
        (["train.init_from={marker}/last.pt"], "last.pt is incomplete: it has no 'algorithm'"),
        (
            ["algorithm.members=2", "train.init_from={run}"],
            "train.init_from with algorithm.members=2 would start every member from the same encoder",
        ),
    ],
}


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "wandb" not in p.parts and p.name != ".lock"  # the lock's own file names its last holder
    }


# The copies of the finished run that `places` damages: name -> (the file, what is done to it).
DAMAGED_COPIES = {
    "truncated": ("last.pt", lambda p: p.write_bytes(p.read_bytes()[:200])),
    "foreign": ("last.pt", lambda p: torch.save({"state_dict": {}}, p)),
    "marker": ("last.pt", lambda p: torch.save({"format": "fewshot-exp-checkpoint-v1"}, p)),
    "cut_best": ("best.pt", lambda p: p.write_bytes(p.read_bytes()[:200])),
    "no_last": ("last.pt", lambda p: p.unlink()),
    "on_cuda": ("last.pt", lambda p: as_if_written_on_cuda(p)),
    "bad_overrides": (".hydra/overrides.yaml", lambda p: p.write_text("- [unclosed\n")),
}


def as_if_written_on_cuda(path: Path) -> None:
    """last.pt as a run on a GPU writes it: a CUDA sampler generator's state is 16 bytes."""
    state = torch.load(path, weights_only=True)
    state["rng"] = {**state["rng"], "device": "cuda", "sampler": torch.zeros(16, dtype=torch.uint8)}
    torch.save(state, path)


@pytest.fixture(scope="module")
def places(glyphs_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-inputs")
    run = base / "run"
    proc = run_cli(*TINY, "logger=none", f"dataset.root={glyphs_root}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (base / "empty").mkdir()
    (base / "zips").mkdir()
    (base / "zips" / "images_background_small1.zip").write_bytes(b"this is not a zip file")
    (base / "file").write_text("not a directory")
    for name in ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta",
                 *(f"mini-imagenet-cache-{split}.pkl" for split in ("train", "val", "test"))):  # fmt: skip
        (base / "pickles" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "pickles" / name).write_bytes(b"not a pickle")
    for name, (damaged, damage) in DAMAGED_COPIES.items():
        copy = base / name
        copy.mkdir()
        for f in run.rglob("*"):
            if f.is_file() and "wandb" not in f.parts:
                (copy / f.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
                (copy / f.relative_to(run)).write_bytes(f.read_bytes())
        damage(copy / damaged)
    assert not zipfile.is_zipfile(base / "zips" / "images_background_small1.zip")
    return {
        "run": run,
        "empty": base / "empty",
        "zips": base / "zips",
        "pickles": base / "pickles",
        "file": base / "file",
        **{name: base / name for name in DAMAGED_COPIES},
        "glyphs": glyphs_root,
    }


FAST_PER_SECTION = 3
ENTRIES = [
    pytest.param(overrides, message, id=" ".join(overrides), marks=[pytest.mark.slow] if i >= FAST_PER_SECTION else [])
    for entries in CATALOGUE.values()
    for i, (overrides, message) in enumerate(entries)
]


@pytest.mark.parametrize("overrides,message", ENTRIES)
def test_bad_input(overrides, message, places, tmp_path, monkeypatch, capfd):
    if overrides in (["device=cuda"], ["resume={on_cuda}"]) and torch.cuda.is_available():
        pytest.skip("a GPU is present")  # device=auto runs on it: {run} itself was written on CUDA
    argv = [o.format(**places) for o in overrides]
    if not any(a.startswith(("dataset=", "dataset.root=")) for a in argv):
        argv.append(f"dataset.root={places['glyphs']}")
    if not any(a.startswith(("hydra.run.dir=", "resume=/", f"resume={tmp_path.anchor}")) for a in argv):
        argv.append(f"hydra.run.dir={tmp_path / 'new'}")
    before = {name: digest(places[name]) for name in ("run", *DAMAGED_COPIES)}
    capfd.readouterr()
    code = call_cli([*TINY, "logger=none", *argv], monkeypatch)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(**places) in lines[0]
    if os.environ.get("FEWSHOT_PRINT_CATALOGUE"):  # feeds the docs table
        with capfd.disabled():
            print(f"CATALOGUE\t{' '.join(overrides)}\t{lines[0]}")
    assert "Traceback" not in out + err
    assert not (tmp_path / "new" / "results.json").exists()
    assert {name: digest(places[name]) for name in before} == before  # nothing already written was touched


def test_device_cuda_without_gpu(places, tmp_path, monkeypatch, capfd):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = call_cli(
        [*TINY, "logger=none", "device=cuda", f"dataset.root={places['glyphs']}", f"hydra.run.dir={tmp_path}"],
        monkeypatch,
    )
    err = capfd.readouterr().err.strip()
    assert code == 2 and err == "error: device=cuda but no CUDA GPU is available; use device=auto or device=cpu"
