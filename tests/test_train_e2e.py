"""python -m train's command line: every run is cross-validated (the runs themselves are in test_crossval.py)."""
import pytest

from train.cli import main, parse_args

pytest.importorskip("tensorflow")


def test_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["leukemia", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_every_run_is_cross_validated_with_5_folds_unless_told():
    base = ["brain", "--data", "x", "--out", "y"]
    assert parse_args(base).cv == 5 and parse_args(base + ["--cv"]).cv == 5 and parse_args(base + ["--cv", "3"]).cv == 3
    with pytest.raises(SystemExit):  # the single-split trainer's options are gone with it
        parse_args(base + ["--split", "split.json"])


def test_recipe_of_the_options_keeps_earlier_recipes_equal():
    from train.cli import recipe_of

    args = parse_args(["leukemia", "--data", "x", "--out", "y", "--epochs", "24", "--cell-crop", "fixed",
                       "--augment", "stain_blur"])
    assert recipe_of(args).to_json() == {
        "preprocessing": {"name": "cnmc_cell", "size": 96, "crop": "fixed"}, "backbone": "small", "width": 16,
        "learning_rate": 0.002, "horizon": 24, "batch_size": 32, "augment": "stain_blur", "seed": 0}
    lite0 = recipe_of(parse_args(["brain", "--data", "x", "--out", "y", "--backbone", "lite0", "--frozen-epochs", "2",
                                  "--group-balance", "--ema", "0.99", "--brain-crop", "none"]))
    assert lite0.frozen_epochs == 2 and lite0.group_balance and lite0.ema == 0.99
    assert lite0.preprocessing == {"name": "brain_mri", "size": 128, "crop": "none"}
