"""Model loading (editor.loader): one default model for every entry point, clear errors for missing models."""

import pytest

from p2pz.editor.loader import DEFAULT_MODEL, ModelLoadError, default_model, resolve_model


def test_offline_hub_id_names_the_fix(monkeypatch, home):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    with pytest.raises(ModelLoadError) as err:
        resolve_model("nobody/no-such-model")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download nobody/no-such-model" in msg and "\n" not in msg


def test_default_model_honours_p2pz_model_at_call_time(monkeypatch):
    assert default_model() == DEFAULT_MODEL == "CompVis/stable-diffusion-v1-4"
    monkeypatch.setenv("P2PZ_MODEL", "/models/my-sd")
    assert default_model() == "/models/my-sd"


def test_p2pz_model_reaches_editor_from_pretrained(monkeypatch, tiny_model):
    from p2pz.editor import Editor

    monkeypatch.setenv("P2PZ_MODEL", str(tiny_model))
    ed = Editor.from_pretrained(captioner=None, device="cpu")
    assert ed.model_id == str(tiny_model) and ed.hidden_size == 32


def test_p2pz_model_reaches_the_registry(monkeypatch, tiny_model, tmp_path):
    from p2pz.registry import Registry

    monkeypatch.setenv("P2PZ_MODEL", str(tiny_model))
    d = Registry.open(f"sqlite:///{tmp_path / 'r.db'}").build_direction("cat", "dog", n=5)
    assert d.encoder_model == str(tiny_model)
