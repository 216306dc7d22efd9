"""The `cgnf` parsers, in-process: help on every option, the options of `train gvae`, `train flow`
and `pipeline` defaulting to (and choosing from) what their config dataclasses and modules
declare, and the pipeline's nested config reading its records and the shipped models'."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cgnf_fast
from cgnf_fast.cli import build_parser
from cgnf_fast.cli import pipeline as cli_pipeline
from cgnf_fast.cli import train as cli_train
from cgnf_fast.pipeline import PipelineConfig, _check_resume
from cgnf_fast.io import CheckpointError
from cgnf_fast.train.flow import TrainFlowConfig
from cgnf_fast.train.gvae import TrainGVAEConfig

PRETRAINED = Path(cgnf_fast.__file__).parent / "pretrained"


def _parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ("cgnf",)):
    """(command path, parser) of every parser under ``p``, ``p`` included."""
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _parsers(sp, path + (name,))


def _parser(*path: str) -> argparse.ArgumentParser:
    return dict(_parsers(build_parser()))[("cgnf", *path)]


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    """Written out here rather than taken from the CLI's helper, so that the two are compared."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_every_option_and_command_has_help() -> None:
    missing = []
    for path, p in _parsers(build_parser()):
        for a in _options(p):
            if not (a.help or "").strip():
                missing.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in a._choices_actions if not (c.help or "").strip()]
    assert not missing, f"options without help: {missing}"
    assert len(list(_parsers(build_parser()))) == 26  # every (sub)command was walked (zc check, search, evaluate beyond and calibrate included)


@pytest.mark.parametrize("command, cls, run_options", [
    (("train", "gvae"), TrainGVAEConfig, cli_train.GVAE_RUN_OPTIONS),
    (("train", "flow"), TrainFlowConfig, cli_train.FLOW_RUN_OPTIONS),
])
def test_training_options_default_to_their_config(command: tuple[str, ...], cls: type,
                                                  run_options: tuple[str, ...]) -> None:
    """Every option of the command sets the config field its dest names and defaults to that
    field's default (``PipelineConfig.gvae_lr = 2e-3`` vs ``--lr 1e-3`` was such a drift)."""
    defaults = _dataclass_defaults(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    checked = 0
    for a in _visible(_parser(*command)):
        if a.dest in run_options:
            continue
        assert a.dest in names, f"{a.option_strings} is neither a {cls.__name__} field nor in the run options"
        if a.required:
            assert a.dest not in defaults, a.dest
            continue
        assert a.default == defaults[a.dest], (a.option_strings, a.default, defaults[a.dest])
        checked += 1
    assert checked >= 18


def test_pipeline_options_default_to_its_config() -> None:
    record = PipelineConfig.default_record()
    checked = 0
    for a in _visible(_parser("pipeline")):
        if a.dest in cli_pipeline.RUN_OPTIONS or a.dest == "space":
            continue
        assert a.dest in record, f"{a.option_strings} is neither a pipeline record entry nor a run option"
        assert a.default == record[a.dest], (a.option_strings, a.default, record[a.dest])
        checked += 1
    assert checked == 25
    # the nested configs' defaults are the training configs' (FLOW_DEFAULTS apart)
    gvae, flow = _dataclass_defaults(TrainGVAEConfig), _dataclass_defaults(TrainFlowConfig)
    for key, (stage, name) in PipelineConfig.record_keys().items():
        want = {**gvae} if stage == "gvae" else {**flow, **PipelineConfig.FLOW_DEFAULTS}
        assert record[key] == want[name], key


def test_choices_come_from_the_modules_that_check_them() -> None:
    from cgnf_fast.models.flow import ACTIVATIONS, DIVERGENCES
    from cgnf_fast.models.flow import BACKENDS as FLOW_BACKENDS
    from cgnf_fast.models.gvae import BACKENDS, PREDICTORS
    from cgnf_fast.train.data import HOLDOUTS
    from cgnf_fast.train.flow import LATENT_NORMS

    want = {("train", "gvae"): {"predictor": PREDICTORS, "holdout": HOLDOUTS, "backend": BACKENDS},
            ("train", "flow"): {"activation": ACTIVATIONS, "divergence": DIVERGENCES, "latent_norm": LATENT_NORMS,
                                "backend": FLOW_BACKENDS},
            ("pipeline",): {"gvae_predictor": PREDICTORS, "gvae_holdout": HOLDOUTS}}
    for command, choices in want.items():
        got = {a.dest: a.choices for a in _options(_parser(*command)) if a.choices is not None}
        assert got == choices, command


def test_one_command_builds_only_its_own_parsers() -> None:
    """`cgnf sample` reads no training config: only the command run builds its parsers."""
    code = ("import sys; from cgnf_fast.cli import build_parser; build_parser('sample'); "
            "print(sorted(m for m in ('cgnf_fast.pipeline', 'cgnf_fast.train.gvae', 'cgnf_fast.train.flow', "
            "'cgnf_fast.train.data') if m in sys.modules))")
    # (cwd "/": from the repository root `-c` would import the unbuilt source tree, not the package)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-m", "cgnf_fast", "pipeline", "--help"], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0 and "--flow-max-cells" in r.stdout and "(default 30000)" in r.stdout


@pytest.mark.parametrize("space", ("nb201-like", "nb101-like"))
def test_shipped_models_records_read_as_the_configs_they_were_trained_with(space: str) -> None:
    """model.json records the pipeline config in the flat layout written before the configs were
    nested; it still reads, and the nested configs hand the stages exactly the training configs
    recorded next to the shipped weights (gvae.json / flow.json)."""
    d = PRETRAINED / space
    record = json.loads((d / "model.json").read_text())["pipeline"]
    cfg = PipelineConfig.from_dict(record)
    back = cfg.to_dict()
    assert {k: back[k] for k in record} == record
    gvae_train = json.loads((d / "gvae" / "gvae.json").read_text())["train"]
    g = cfg.gvae_config(gvae_train["store"])
    g.validate()  # resolves degree_features, as training did
    assert g.to_dict() == {**TrainGVAEConfig.LEGACY_DEFAULTS, **gvae_train}
    # (flows trained before the backend field existed ran the default, native)
    flow_train = json.loads((d / "flow" / "flow.json").read_text())["train"]
    assert cfg.flow_config().to_dict() == {"backend": "native", **flow_train}


def test_pipeline_defaults_are_the_shipped_nb201_like_model() -> None:
    # made by `cgnf pipeline --space nb201-like --out ... --store ...`: only the store is not a default
    record = json.loads((PRETRAINED / "nb201-like" / "model.json").read_text())["pipeline"]
    default = PipelineConfig(space="nb201-like").to_dict()
    assert {k: v for k, v in record.items() if default[k] != v} == {"store": record["store"]}
    assert default["gvae_lr"] == 2e-3 and default["flow_max_cells"] == 30_000


def test_pipeline_config_round_trips_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    cfg = PipelineConfig(space="nb101-like", seed=3)
    cfg.gvae.lr, cfg.flow.hidden = 1e-3, [8, 8]
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown pipeline config keys \['gvae_nonsense'\]"):
        PipelineConfig.from_dict({"space": "nb101-like", "gvae_nonsense": 1})
    # owned fields are the pipeline's
    cfg.gvae.seed = 5
    with pytest.raises(ValueError, match="gvae.seed is set by the pipeline from its seed"):
        cfg.validate()
    assert PipelineConfig(space="nb101-like", seed=3).gvae_config("s").seed == 3

    def write(config: dict[str, Any]) -> None:
        (tmp_path / "pipeline.json").write_text(json.dumps({"format": "cgnf_fast.pipeline", "config": config}))

    # a record from before the nesting holds only the fields that had options: the rest ran with
    # their defaults, so the same command resumes it
    old = {k: v for k, v in PipelineConfig(space="nb101-like").to_dict().items()
           if not k.startswith(("gvae_", "flow_")) or k in ("gvae_epochs", "gvae_lr", "gvae_hidden", "gvae_layers",
                                                             "gvae_batch", "gvae_predictor", "gvae_predictor_lr",
                                                             "gvae_holdout", "flow_epochs", "flow_batch",
                                                             "flow_max_cells", "flow_hidden")}
    write(old)
    _check_resume(tmp_path, PipelineConfig(space="nb101-like"))
    changed = PipelineConfig(space="nb101-like")
    changed.gvae.beta = 0.5
    with pytest.raises(ValueError, match=r"different config \(gvae_beta: 0.001 -> 0.5\)"):
        _check_resume(tmp_path, changed)
    write({**old, "from_the_future": 1})
    with pytest.raises(CheckpointError, match=r"not a pipeline config this version reads \(unknown pipeline config "
                       r"keys \['from_the_future'\]\)"):
        _check_resume(tmp_path, PipelineConfig(space="nb101-like"))


def _visible(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in _options(p) if a.help != argparse.SUPPRESS]


def test_one_spelling_per_concept() -> None:
    """Images per proxy evaluation are ``--image-batch`` wherever they are asked for, ``--batch``
    is only ever a training batch, draws are ``--draws``, and every command with a space takes
    ``--space``; the old spellings still parse but are not listed."""
    spellings: dict[str, set[tuple[str, ...]]] = {}
    for path, p in _parsers(build_parser()):
        for a in _visible(p):
            for o in a.option_strings:
                spellings.setdefault(o, set()).add(path[1:])
    assert "--batch-size" not in spellings
    assert spellings["--image-batch"] == {("zc", "score"), ("pipeline",)}
    assert spellings["--batch"] == {("train", "gvae"), ("train", "flow")}
    assert spellings["--draws"] == {("evaluate", "sampler")}
    for path, p in _parsers(build_parser()):
        if any(a.dest in ("space", "space_flag") for a in _options(p)):
            assert "--space" in [o for a in _visible(p) for o in a.option_strings], path
    # the old spellings, hidden aliases of the new ones
    parse = build_parser().parse_args
    assert parse(["zc", "score", "nb201", "--proxies", "nwot", "--store", "s", "--batch-size", "8"]).batch_size == 8
    assert parse(["zc", "score", "nb201", "--proxies", "nwot", "--store", "s"]).batch_size == 16
    assert parse(["pipeline", "--space", "nb201-like", "--out", "o", "--batch-size", "8"]).batch_size == 8
    assert parse(["evaluate", "sampler", "--batch", "50"]).draws == 50
    assert parse(["evaluate", "sampler", "--draws", "50"]).draws == 50


def test_the_default_image_batch_is_the_shipped_models_labels_batch() -> None:
    """``zc.score`` without a batch, ``cgnf zc score`` and ``cgnf pipeline`` score on the batch the
    shipped models' labels used, so a measured score compares with a prediction (it was 64)."""
    from cgnf_fast.zc.score import DEFAULT_BATCH

    for space in ("nb201-like", "nb101-like"):
        record = json.loads((PRETRAINED / space / "model.json").read_text())["pipeline"]
        assert record["batch_size"] == DEFAULT_BATCH == 16
    assert PipelineConfig(space="nb201-like").batch_size == DEFAULT_BATCH
    assert _parser("zc", "score").get_default("batch_size") == DEFAULT_BATCH


def test_sample_help_lists_the_attributes_condition_accepts() -> None:
    (cond,) = [a for a in _options(_parser("sample")) if a.dest == "condition"]
    for space in ("nb201-like", "nb101-like"):
        assert f"{space}: nwot, synflow, params, flops" in cond.help
