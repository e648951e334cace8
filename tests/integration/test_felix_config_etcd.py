"""Agent parameters from a real etcd's config/ keys, layered under flags and environment."""

from __future__ import annotations

import pytest

from felix import config
from felix.calc import Model
from l3net.datastore import EtcdDatastore
from l3net.keys import KeyLayout
from l3net.syncer import Syncer
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_datastore_config_read_at_start_and_followed_by_the_feed(datastore: EtcdDatastore,
                                                                 key_layout: KeyLayout) -> None:
    put = datastore.put
    put(config.config_key(key_layout, "global", "ApplyMaxInterval"), b"45")
    put(config.config_key(key_layout, "global", "LogLevel"), b"debug")
    put(config.config_key(key_layout, "node", "ApplyMaxInterval", "n1"), b"30s")
    put(config.config_key(key_layout, "node", "PolicyEnabled", "n1"), b"not-a-bool")
    put(config.config_key(key_layout, "node", "ApplyMaxInterval", "n2"), b"5")
    put(key_layout.resource("nodes", "n1"), b"{}")  # not config: never read as such

    base = config.load({}, {"L3NET_LOG_LEVEL": "ERROR"})
    raw = config.read_datastore_config(datastore, key_layout)
    assert len(raw) == 5 and all(k.startswith(key_layout.prefix + "config/") for k in raw)
    cfg = config.with_datastore(base, raw, key_layout, "n1")
    assert cfg.apply_max_interval == 30.0  # node beats global
    assert cfg.log_level == "ERROR"        # the environment beats the datastore
    assert cfg.policy_enabled is True      # bad value ignored: the default stays
    assert config.with_datastore(base, raw, key_layout, "n2").apply_max_interval == 5.0

    # Changes arrive with the agent's datastore feed (the syncer over the whole prefix) into the model.
    model = Model(key_layout)

    class Sink:
        def on_updates(self, updates: list) -> None:
            model.apply(updates)

        def on_in_sync(self) -> None: ...

        def on_status(self, status: str) -> None: ...

    syncer = Syncer(datastore, key_layout.prefix, Sink())
    syncer.start()
    try:
        wait_for(lambda: model.config == raw, what="config keys in the model")
        datastore.delete(config.config_key(key_layout, "node", "ApplyMaxInterval", "n1"))
        wait_for(lambda: config.with_datastore(base, model.config, key_layout, "n1").apply_max_interval == 45.0,
                 what="the global value once the node override is deleted")
    finally:
        syncer.stop()
