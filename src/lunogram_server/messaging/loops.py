"""The senders of a process (LUNOGRAM_SENDER_TASKS), woken when messages are queued, and the processes that
render their large batches (LUNOGRAM_RENDER_PROCESSES)."""

from __future__ import annotations

import asyncio

from lunogram_server.messaging import crypto
from lunogram_server.messaging.providers import parse_networks
from lunogram_server.messaging.providers.base import default_ssl_context
from lunogram_server.messaging.providers_service import ProviderRegistry
from lunogram_server.messaging.render_pool import RenderPool
from lunogram_server.messaging.sender import Sender
from lunogram_server.reactions import LoopContext

CHANNEL = "lunogram_messages"  # NOTIFY'd by a trigger on message_outbox (migration 0032)


async def sender_loop(ctx: LoopContext) -> None:
    settings = ctx.settings
    keyring = crypto.keyring(settings)
    ssl_context = await asyncio.to_thread(default_ssl_context)  # loading the CA bundle: not on the loop
    registry = ProviderRegistry(
        ssl_context=ssl_context, allowed_networks=parse_networks(settings.journeys.webhook_allowed_networks)
    )
    renderer = RenderPool(settings.messaging.render_processes)  # the process's senders share its children
    senders = [
        Sender(
            ctx.pool,
            settings.messaging,
            registry,
            keyring,
            settings.public_url,
            wakeup=ctx.wakeups.waiter(CHANNEL),
            renderer=renderer,
        )
        for _ in range(settings.messaging.sender_tasks)
    ]
    try:
        await asyncio.gather(*(sender.run(ctx.stop) for sender in senders))
    finally:
        renderer.close()
        await registry.aclose()
