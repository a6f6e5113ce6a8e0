"""The service's own limit on requests in flight to one FHIR server: priority, arrival order, honest waits."""

from __future__ import annotations

import asyncio

import pytest

from adapter.fhir.slots import PATIENT, SEARCH, Slots, SlotWaitTimeout


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _hold_until(slots: Slots, gate: asyncio.Event) -> None:
    """A request that keeps its slot until `gate` is set (a slow server)."""
    async with slots.hold(SEARCH, None):
        await gate.wait()


async def test_a_waiting_patient_read_goes_before_searches_that_queued_earlier() -> None:
    slots = Slots(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def request(name: str, priority: int) -> None:
        async with slots.hold(priority, None):
            order.append(name)
            if name == "first":
                await gate.wait()

    first = asyncio.create_task(request("first", SEARCH))
    await _settle()
    searches = [asyncio.create_task(request(f"search {i}", SEARCH)) for i in range(3)]
    await _settle()
    patient = asyncio.create_task(request("patient", PATIENT))
    await _settle()
    gate.set()
    await asyncio.gather(first, *searches, patient)
    assert order == ["first", "patient", "search 0", "search 1", "search 2"]
    assert slots.busy == 0 and slots.waiting == 0


async def test_a_wait_past_its_timeout_fails_and_leaves_the_slots_whole() -> None:
    slots = Slots(1)
    gate = asyncio.Event()
    holder = asyncio.create_task(_hold_until(slots, gate))
    await _settle()
    with pytest.raises(SlotWaitTimeout):
        async with slots.hold(PATIENT, 0.05):
            pytest.fail("no slot was free")
    gate.set()
    await holder
    assert slots.busy == 0 and slots.waiting == 0
    async with slots.hold(SEARCH, 0.05):  # and the slot is there for the next request
        assert slots.busy == 1


async def test_a_cancelled_waiter_gives_up_its_place_and_never_its_slot() -> None:
    slots = Slots(2)
    gate = asyncio.Event()
    holders = [asyncio.create_task(_hold_until(slots, gate)) for _ in range(2)]
    await _settle()
    waiter = asyncio.create_task(_hold_until(slots, gate))
    await _settle()
    assert slots.waiting == 1
    waiter.cancel()  # the hook's deadline: the job is cancelled while it waits
    await asyncio.gather(waiter, return_exceptions=True)
    gate.set()
    await asyncio.gather(*holders)
    assert slots.busy == 0 and slots.waiting == 0


@pytest.mark.parametrize("settle", [0, 1, 2, 3])
async def test_a_waiter_cancelled_as_it_is_handed_the_slot_is_cancelled_and_gives_the_slot_back(settle: int) -> None:
    """The hook's deadline cancels a request just as a slot frees up for it: the cancel must not be lost
    (asyncio.wait_for on Python 3.11 lost it and the hook waited for the whole request), and the slot must
    come back — whichever step of the hand-over the cancel lands on."""
    slots = Slots(1)
    gate = asyncio.Event()
    finished = asyncio.Event()

    async def waiter() -> None:
        async with slots.hold(SEARCH, 10.0):
            await asyncio.sleep(10)  # the request (with the cancel lost, the test waits for it and fails)
            finished.set()

    holder = asyncio.create_task(_hold_until(slots, gate))
    await _settle()
    task = asyncio.create_task(waiter())
    await _settle()
    gate.set()
    await holder
    for _ in range(settle):
        await asyncio.sleep(0)
    task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError) and not finished.is_set()
    assert slots.busy == 0 and slots.waiting == 0
