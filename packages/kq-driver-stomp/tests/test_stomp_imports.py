"""What a worker's start imports from the STOMP package: the driver and its consumer, not the producer (it is
imported when first used). Checked by what a fresh interpreter loads, never by timing."""

from __future__ import annotations

from kq.core.testing import check_lazy_exports, modules_loaded_after


def test_a_worker_does_not_load_the_producer() -> None:
    loaded = modules_loaded_after("import kq.drivers.stomp, kq.drivers.stomp._consumer, kq.core._loop")
    assert sorted(loaded & {"kq.drivers.stomp._producer"}) == []
    assert "kq.drivers.stomp._driver" in loaded


def test_every_public_name_resolves_on_first_use() -> None:
    check_lazy_exports("kq.drivers.stomp")
