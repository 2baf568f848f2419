"""An embedded run never touches the network: the hub libraries are offline while it runs."""

from __future__ import annotations

import os

from agentcoder.run import OFFLINE_ENV, hub_offline
from tests.helpers import compose_cfg


def test_embedded_runs_are_offline_and_the_switch_is_undone(monkeypatch):
    from peft.utils.other import check_file_exists_on_hf_hub

    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    with hub_offline(compose_cfg("method=lora")) as switched:
        assert switched and all(os.environ[k] == "1" for k in OFFLINE_ENV)
        # peft's lookup at every adapter save answers at once instead of asking the hub.
        assert check_file_exists_on_hf_hub("HuggingFaceTB/SmolLM2-135M-Instruct", "config.json") is None
    assert not any(k in os.environ for k in OFFLINE_ENV)


def test_hub_runs_stay_online(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with hub_offline(compose_cfg("model.source=hub", f"model.hub_id={tmp_path}")) as switched:
        assert not switched and "HF_HUB_OFFLINE" not in os.environ
