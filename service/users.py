"""Users: create, read, find by email, update and delete (which takes their conversations along)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.db import Database, retrying_rollbacks
from service.errors import NotFound, problem_responses
from service.fields import Email, EmailQuery, PathId, PersonName
from service.pages import Page
from service.queries import Query, QueryFile


class UserQueries(QueryFile, file="users"):
    create_user: Query
    get_user: Query
    find_users_by_email: Query
    update_user: Query
    lock_conversations_of_user: Query
    lock_messages_of_user: Query
    delete_user: Query


sql = UserQueries()


class User(msgspec.Struct):
    id: int
    email: str
    name: str
    created_at: datetime


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    name: PersonName


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email | msgspec.UnsetType = msgspec.UNSET
    name: PersonName | msgspec.UnsetType = msgspec.UNSET


def _given(value: str | msgspec.UnsetType) -> str | None:
    """A PATCH field as a query parameter: NULL when absent, so the SQL keeps the stored value."""
    return None if isinstance(value, msgspec.UnsetType) else value


class UsersController(Controller):
    path = "/v1/users"
    tags = ("users",)

    @post(status_code=201, summary="Create a user", responses=problem_responses(400, 409))
    async def create_user(self, data: JSONBody[UserCreate], db: NamedDependency[Database]) -> User:
        async with db.connection() as conn:
            user = await sql.create_user.one(conn, User, email=data.email, name=data.name)
        assert user is not None
        return user

    @get("/{user_id:str}", summary="Get a user", responses=problem_responses(400, 404))
    async def get_user(self, user_id: PathId, db: NamedDependency[Database]) -> User:
        async with db.connection() as conn:
            user = await sql.get_user.one(conn, User, user_id=user_id)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    @get(summary="Find users by email (zero or one)", responses=problem_responses(400))
    async def find_users(self, email: EmailQuery, db: NamedDependency[Database]) -> Page[User]:
        async with db.connection() as conn:
            users = await sql.find_users_by_email.many(conn, User, email=email)
        return Page(items=users)

    @patch("/{user_id:str}", summary="Change a user's email or name", responses=problem_responses(400, 404, 409))
    async def update_user(self, user_id: PathId, data: JSONBody[UserUpdate], db: NamedDependency[Database]) -> User:
        async with db.connection() as conn:
            user = await sql.update_user.one(
                conn, User, user_id=user_id, email=_given(data.email), name=_given(data.name)
            )
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    @delete(
        "/{user_id:str}",
        summary="Delete a user with their conversations and messages",
        responses=problem_responses(400, 404),
    )
    async def delete_user(self, user_id: PathId, db: NamedDependency[Database]) -> None:
        async with db.connection() as conn:

            async def erase() -> int | None:
                # Conversations, then messages, then the user: the order other writes lock them in.
                await sql.lock_conversations_of_user.exec(conn, user_id=user_id)
                await sql.lock_messages_of_user.exec(conn, user_id=user_id)
                erased: int | None = await sql.delete_user.val(conn, user_id=user_id)
                return erased

            deleted = await retrying_rollbacks(conn, erase)
        if deleted is None:
            raise NotFound(f"user {user_id} does not exist")
