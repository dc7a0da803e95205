"""`Client` (blocking) and `AsyncClient` (asyncio): the same namespaces over the same operations.

Each namespace method is bound from one builder in `_operations` (its signature and docstring are defined
once there); the sync client sends the built `Operation` with `httpx.Client`, the async one with
`httpx.AsyncClient`. Retries, request building and response parsing live in `_base.BaseClient`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

import httpx

from . import _operations as ops
from ._base import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, BaseClient, Reply
from ._operations import Operation

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E")


def _document(call: Callable[..., Any], build: Callable[..., Any], name: str, qualname: str) -> None:
    # help(client.users.upsert) shows the builder's parameters and docstring, returning the parsed result
    call.__name__ = name
    call.__qualname__ = qualname
    call.__doc__ = build.__doc__
    signature = inspect.signature(build)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Operation[") and returns.endswith("]"):
        returns = returns[len("Operation[") : -1]
    call.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]


class _Namespace:
    def __init__(self, client: _Sender) -> None:
        self._client = client


class _Sender:
    """What a namespace needs from its client (see `Client._execute` / `AsyncClient._execute`)."""

    def _execute(self, op: Operation[Any]) -> Any:
        raise NotImplementedError


class _SyncEndpoint(Generic[P, T]):
    """Binds an operation builder as a blocking method: `(args) -> T`."""

    def __init__(self, build: Callable[P, Operation[T]]) -> None:
        self._build = build
        self._name = self._qualname = build.__name__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name, self._qualname = name, f"{owner.__qualname__}.{name}"

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _SyncEndpoint[P, T]: ...
    @overload
    def __get__(self, instance: _Namespace, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, instance: _Namespace | None, owner: type[Any]) -> _SyncEndpoint[P, T] | Callable[P, T]:
        if instance is None:
            return self
        build, client = self._build, instance._client

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = client._execute(build(*args, **kwargs))
            return result

        _document(call, build, self._name, self._qualname)
        return call


class _AsyncEndpoint(Generic[P, T]):
    """Binds an operation builder as a coroutine method: `(args) -> Coroutine[Any, Any, T]` (awaitable, or a task)."""

    def __init__(self, build: Callable[P, Operation[T]]) -> None:
        self._build = build
        self._name = self._qualname = build.__name__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name, self._qualname = name, f"{owner.__qualname__}.{name}"

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _AsyncEndpoint[P, T]: ...
    @overload
    def __get__(self, instance: _Namespace, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(
        self, instance: _Namespace | None, owner: type[Any]
    ) -> _AsyncEndpoint[P, T] | Callable[P, Coroutine[Any, Any, T]]:
        if instance is None:
            return self
        build, client = self._build, instance._client

        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = await client._execute(build(*args, **kwargs))
            return result

        _document(call, build, self._name, self._qualname)
        return call


# --- sync namespaces --------------------------------------------------------------------------------------


class UserEvents(_Namespace):
    post = _SyncEndpoint(ops.post_user_events)


class UserSchedules(_Namespace):
    upsert = _SyncEndpoint(ops.upsert_user_schedule)
    delete = _SyncEndpoint(ops.delete_user_schedule)


class UserDevices(_Namespace):
    register = _SyncEndpoint(ops.register_device)


class UserInbox(_Namespace):
    post = _SyncEndpoint(ops.post_user_inbox)
    list = _SyncEndpoint(ops.list_user_inbox)
    count = _SyncEndpoint(ops.count_user_inbox)
    read = _SyncEndpoint(ops.read_user_inbox)
    archive = _SyncEndpoint(ops.archive_user_inbox)


class Users(_Namespace):
    upsert = _SyncEndpoint(ops.upsert_user)
    delete = _SyncEndpoint(ops.delete_user)

    def __init__(self, client: _Sender) -> None:
        super().__init__(client)
        self.events = UserEvents(client)
        self.schedules = UserSchedules(client)
        self.devices = UserDevices(client)
        self.inbox = UserInbox(client)


class OrganizationEvents(_Namespace):
    post = _SyncEndpoint(ops.post_organization_events)


class OrganizationSchedules(_Namespace):
    upsert = _SyncEndpoint(ops.upsert_organization_schedule)
    delete = _SyncEndpoint(ops.delete_organization_schedule)


class OrganizationInbox(_Namespace):
    post = _SyncEndpoint(ops.post_organization_inbox)
    list = _SyncEndpoint(ops.list_organization_inbox)
    count = _SyncEndpoint(ops.count_organization_inbox)
    read = _SyncEndpoint(ops.read_organization_inbox)
    archive = _SyncEndpoint(ops.archive_organization_inbox)


class Organizations(_Namespace):
    upsert = _SyncEndpoint(ops.upsert_organization)
    delete = _SyncEndpoint(ops.delete_organization)
    add_user = _SyncEndpoint(ops.add_organization_user)
    remove_user = _SyncEndpoint(ops.remove_organization_user)

    def __init__(self, client: _Sender) -> None:
        super().__init__(client)
        self.events = OrganizationEvents(client)
        self.schedules = OrganizationSchedules(client)
        self.inbox = OrganizationInbox(client)


class Push(_Namespace):
    vapid = _SyncEndpoint(ops.get_vapid_public_key)


class Messages(_Namespace):
    send = _SyncEndpoint(ops.send_message)
    get = _SyncEndpoint(ops.get_message)


# --- async namespaces -------------------------------------------------------------------------------------


class AsyncUserEvents(_Namespace):
    post = _AsyncEndpoint(ops.post_user_events)


class AsyncUserSchedules(_Namespace):
    upsert = _AsyncEndpoint(ops.upsert_user_schedule)
    delete = _AsyncEndpoint(ops.delete_user_schedule)


class AsyncUserDevices(_Namespace):
    register = _AsyncEndpoint(ops.register_device)


class AsyncUserInbox(_Namespace):
    post = _AsyncEndpoint(ops.post_user_inbox)
    list = _AsyncEndpoint(ops.list_user_inbox)
    count = _AsyncEndpoint(ops.count_user_inbox)
    read = _AsyncEndpoint(ops.read_user_inbox)
    archive = _AsyncEndpoint(ops.archive_user_inbox)


class AsyncUsers(_Namespace):
    upsert = _AsyncEndpoint(ops.upsert_user)
    delete = _AsyncEndpoint(ops.delete_user)

    def __init__(self, client: _Sender) -> None:
        super().__init__(client)
        self.events = AsyncUserEvents(client)
        self.schedules = AsyncUserSchedules(client)
        self.devices = AsyncUserDevices(client)
        self.inbox = AsyncUserInbox(client)


class AsyncOrganizationEvents(_Namespace):
    post = _AsyncEndpoint(ops.post_organization_events)


class AsyncOrganizationSchedules(_Namespace):
    upsert = _AsyncEndpoint(ops.upsert_organization_schedule)
    delete = _AsyncEndpoint(ops.delete_organization_schedule)


class AsyncOrganizationInbox(_Namespace):
    post = _AsyncEndpoint(ops.post_organization_inbox)
    list = _AsyncEndpoint(ops.list_organization_inbox)
    count = _AsyncEndpoint(ops.count_organization_inbox)
    read = _AsyncEndpoint(ops.read_organization_inbox)
    archive = _AsyncEndpoint(ops.archive_organization_inbox)


class AsyncOrganizations(_Namespace):
    upsert = _AsyncEndpoint(ops.upsert_organization)
    delete = _AsyncEndpoint(ops.delete_organization)
    add_user = _AsyncEndpoint(ops.add_organization_user)
    remove_user = _AsyncEndpoint(ops.remove_organization_user)

    def __init__(self, client: _Sender) -> None:
        super().__init__(client)
        self.events = AsyncOrganizationEvents(client)
        self.schedules = AsyncOrganizationSchedules(client)
        self.inbox = AsyncOrganizationInbox(client)


class AsyncPush(_Namespace):
    vapid = _AsyncEndpoint(ops.get_vapid_public_key)


class AsyncMessages(_Namespace):
    send = _AsyncEndpoint(ops.send_message)
    get = _AsyncEndpoint(ops.get_message)


# --- clients ----------------------------------------------------------------------------------------------


class Client(BaseClient, _Sender):
    """Blocking client of the Lunogram Client API.

    `api_key` falls back to `LUNOGRAM_API_KEY`, `base_url` to `LUNOGRAM_BASE_URL`, then to the hosted
    `https://console.lunogram.com/api` (self-hosted: `https://your-host/api`). Failed attempts (network
    errors, 408, 429, 5xx) are retried up to `max_retries` times with jittered exponential backoff, honouring
    `Retry-After`; every POST carries one `Idempotency-Key` for all its attempts. Pass `http_client` to
    bring your own `httpx.Client` (proxies, TLS ...): it is then yours to close. Use it as a context manager,
    or call `close()`, to release the connection pool.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)
        self._sleep: Callable[[float], None] = time.sleep
        self.users = Users(self)
        self.organizations = Organizations(self)
        self.push = Push(self)
        self.messages = Messages(self)

    def _execute(self, op: Operation[T]) -> T:
        steps = self._steps(self._http, op)
        reply: Reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            if isinstance(step, httpx.Request):
                try:
                    reply = self._http.send(step)
                except httpx.TransportError as exc:
                    reply = exc
            else:
                self._sleep(step)
                reply = None

    def close(self) -> None:
        """Close the connection pool (unless the `httpx.Client` was passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(BaseClient, _Sender):
    """Asyncio client of the Lunogram Client API: the same surface as `Client`, every method awaitable.

    Use it as an async context manager, or `await client.close()`, to release the connection pool.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.users = AsyncUsers(self)
        self.organizations = AsyncOrganizations(self)
        self.push = AsyncPush(self)
        self.messages = AsyncMessages(self)

    async def _execute(self, op: Operation[T]) -> T:
        steps = self._steps(self._http, op)
        reply: Reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            if isinstance(step, httpx.Request):
                try:
                    reply = await self._http.send(step)
                except httpx.TransportError as exc:
                    reply = exc
            else:
                await self._sleep(step)
                reply = None

    async def close(self) -> None:
        """Close the connection pool (unless the `httpx.AsyncClient` was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
