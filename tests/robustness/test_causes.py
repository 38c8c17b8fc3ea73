"""Messages that name the real cause and the real fix (issue 23), through the real CLI where a
command meets the case: one error line, nothing changed."""

import json

from sena_cli.frame import remove_leftovers
from tests.robustness.helpers import fails, params_with, theta1
from tests.robustness.test_schemas import _edited


def test_an_exponent_without_a_dot_is_named_with_its_spelling(project, monkeypatch):
    # PyYAML reads `lr: 1e-5` (no dot) as the text '1e-5'.
    text = params_with(project, train__lr="@LR@").replace("'@LR@'", "1e-5")
    assert "lr: 1e-5\n" in text
    fails(project, monkeypatch, ["noise", "--iter", "1"],
          "params.yaml: 'train.lr' must be a number, got '1e-5'; YAML reads 1e-5 as text: write 1.0e-5 "
          "(a dot before the e)", text)


def test_a_nul_byte_in_a_json_list_path_names_the_file_and_the_item(project, monkeypatch, tmp_path):
    listing = project / "nul-list.json"  # inside the project, as a pool must be (given by its absolute path)
    listing.write_text(json.dumps([{"image": "a.png"}, {"image": "b\u0000.png"}]))
    for command in (["sample", "--iter", "1"], ["pool"]):
        fails(project, monkeypatch, command,
              f"{listing}: item 2: 'image' path 'b\\x00.png' holds a NUL byte, which no file name can; fix the list",
              params_with(project, sample__pool=str(listing)))


def test_a_checkpoint_cut_short_names_the_file(project, monkeypatch):
    with theta1(project):
        weights = project / "models/iter1/model.safetensors"
        whole = weights.read_bytes()
        weights.write_bytes(b"")
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              "models/iter1/model.safetensors: 0 bytes, so the weights cannot be read; rebuild this checkpoint")
        cut = 8 + int.from_bytes(whole[:8], "little") + 100  # the header and 100 bytes of tensors
        weights.write_bytes(whole[:cut])
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              f"models/iter1/model.safetensors: cut short ({cut} bytes; its header places tensors up to byte "
              f"{len(whole)}), so the weights cannot be read")
        weights.write_bytes(whole[:100])
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              f"models/iter1/model.safetensors: cut short (its header claims {cut - 108} bytes; the file has 100)")
        weights.write_bytes(whole[:5])
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              "models/iter1/model.safetensors: cut short (5 bytes, less than the 8-byte header length)")


def test_a_deleted_world_and_a_moved_pool_name_different_fixes(project, monkeypatch):
    world, aside = project / "data/world", project / "data/world-aside"
    world.rename(aside)
    try:
        fails(project, monkeypatch, ["noise", "--iter", "1"],
              "data/world: the embedded world is gone (the pool of data/world/pool/")
    finally:
        aside.rename(world)
    manifest = project / "data/iter1/sample/manifest.jsonl"

    def moved(text):
        lines = text.splitlines()
        first = json.loads(lines[0])
        first["path"] = "photos/cats/0.png"
        return "\n".join([json.dumps(first), *lines[1:]]) + "\n"

    with _edited(manifest, moved):
        fails(project, monkeypatch, ["noise", "--iter", "1"],
              "photos: folder missing, so the sampled photos/cats/0.png cannot be read (was the pool moved?); put "
              "it back, or point sample.pool to its new place and rerun `sena sample --iter 1`")


def test_an_edited_noise_timestep_is_named(project, monkeypatch):
    info = json.loads((project / "data/iter1/noised/info.json").read_text())
    edited = info["timestep"] + 1
    for command in ("qa",):
        fails(project, monkeypatch, [command, "--iter", "1"],
              f"data/iter1/noised/info.json: written with noise.timestep {info['timestep']}, params now say "
              f"{edited}; rerun `sena noise --iter 1` (and the stages after it), or put the value back",
              params_with(project, noise__timestep=edited))
    fails(project, monkeypatch, ["qa", "--iter", "1"],
          "data/iter1/noised/info.json: written with another noise schedule (noise.beta_start, beta_end, "
          "beta_schedule or num_train_timesteps changed since); rerun `sena noise --iter 1`",
          params_with(project, noise__beta_end=0.03))


def test_a_token_in_a_path_is_hidden_by_the_error_line_itself(project, monkeypatch):
    # Not a URL, so not refused as one: the red line's redaction is the net under every message.
    output = fails(project, monkeypatch, ["base"], "llava?token=***: model directory not found",
                   params_with(project, model__base="./llava?token=hf_Planted0451"))
    assert "hf_Planted0451" not in output


def test_the_leftovers_of_an_interrupted_save_are_removed_and_named(tmp_path):
    target = tmp_path / "models/iter1"
    (tmp_path / "models/.iter1.saving").mkdir(parents=True)
    (tmp_path / "models/.iter1.saving/model.safetensors").write_bytes(b"\0" * 10)
    target.mkdir()
    assert remove_leftovers(target) == {"removed": f"{tmp_path}/models/.iter1.saving (left by an interrupted save)"}
    assert not (tmp_path / "models/.iter1.saving").exists() and target.is_dir()
    assert remove_leftovers(target) == {}
    # killed between the two renames of _save_model: θ1 is only under .iter1.old
    target.rename(tmp_path / "models/.iter1.old")
    assert remove_leftovers(target) == {
        "restored": f"{target} from {tmp_path}/models/.iter1.old (an interrupted save had moved it)"}
    assert target.is_dir()




def test_a_full_disk_reported_by_safetensors_is_named_as_a_full_disk(project, monkeypatch):
    import sena_cli.stages.noise

    class SafetensorError(Exception):
        pass

    def full(*args, **kwargs):  # what safetensors' Rust writer raises when θK's save meets a full disk
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    full.__module__ = "sena_cli.stages.noise"  # the CLI names the stage's lock by its module
    monkeypatch.setattr(sena_cli.stages.noise, "run_noise", full)
    fails(project, monkeypatch, ["noise", "--iter", "1"],
          "no space left on the device writing an artifact (SafetensorError); free space and rerun (finished work "
          "is kept, nothing half-written was published)")
