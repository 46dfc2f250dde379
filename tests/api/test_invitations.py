"""Invitations over HTTP: invite, see, accept, decline, revoke, expire; the role rules of
membership; the same answer whether or not an e-mail has an account; two tenants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.app import create_app
from api.ids import to_global_id
from api.settings import Settings
from db import tables
from db.tenancy import TenantContext, request_transaction
from db.uuid7 import uuid7
from tests.api.conftest import Api
from tests.api.test_auth import sign_up
from tests.api.world import ROLES, Org

ERRORS = "errors { __typename message code path }"
INVITATION = "invitation { id email role status expiresAt organization { slug } }"
VIEWER_INVITATIONS = """{ viewer { invitations(first: 20) { totalCount nodes {
  id email role status organization { name slug } } } } }"""
ORG_INVITATIONS = "{ organization { invitations(first: 50) { totalCount nodes { id email role status invitedBy { email } } } } }"


def fresh_email(tag: str = "invitee") -> str:
    return f"{tag}-{uuid7().hex[-12:]}@example.test"


async def mutate(
    api: Api,
    name: str,
    input: dict[str, Any],
    fields: str,
    *,
    as_: tuple[Org, str] | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    input_type = name[0].upper() + name[1:] + "Input"
    body = await api(
        f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {fields} {ERRORS} }} }}",
        {"input": input},
        as_=as_,
        token=token,
    )
    assert "errors" not in body, body
    return body["data"][name]  # type: ignore[no-any-return]


async def invite(
    api: Api, org: Org, email: str, role: str = "MEMBER", by: str = "admin"
) -> dict[str, Any]:
    return await mutate(
        api, "inviteMember", {"email": email, "role": role}, INVITATION, as_=(org, by)
    )


async def invitation_id(api: Api, org: Org, email: str, role: str = "MEMBER") -> str:
    done = await invite(api, org, email, role)
    assert done["errors"] == [], done
    return done["invitation"]["id"]  # type: ignore[no-any-return]


async def viewer_invitations(api: Api, token: str) -> list[dict[str, Any]]:
    body = await api(VIEWER_INVITATIONS, token=token)
    assert "errors" not in body, body
    nodes: list[dict[str, Any]] = body["data"]["viewer"]["invitations"]["nodes"]
    assert body["data"]["viewer"]["invitations"]["totalCount"] == len(nodes)
    return nodes


async def org_invitations(api: Api, org: Org, role: str = "admin") -> list[dict[str, Any]]:
    body = await api(ORG_INVITATIONS, as_=(org, role))
    assert "errors" not in body, body
    return body["data"]["organization"]["invitations"]["nodes"]  # type: ignore[no-any-return]


async def memberships(api: Api, token: str) -> dict[str, str]:
    body = await api(
        "{ viewer { memberships(first: 50) { nodes { role organization { slug } } } } }",
        token=token,
    )
    return {
        n["organization"]["slug"]: n["role"] for n in body["data"]["viewer"]["memberships"]["nodes"]
    }


async def test_the_answer_is_the_same_whether_or_not_the_email_has_an_account(
    api: Api, org_a: Org, org_b: Org
) -> None:
    with_account = org_b.emails["member"]  # a user, not a member of A
    without_account = fresh_email("nobody")
    answers = [await invite(api, org_a, e) for e in (with_account, without_account)]
    for answer, email in zip(answers, (with_account, without_account), strict=True):
        assert answer["errors"] == []
        assert answer["invitation"]["email"] == email
    # Everything but the id, the e-mail and the (clock-dependent) expiry is equal, and the
    # payload has no field that names an account.
    same = [
        {k: v for k, v in a["invitation"].items() if k not in ("id", "email", "expiresAt")}
        for a in answers
    ]
    assert (
        same[0]
        == same[1]
        == {"role": "MEMBER", "status": "PENDING", "organization": {"slug": org_a.slug}}
    )
    # Inviting the same two again replaces each pending invitation, again alike.
    again = [await invite(api, org_a, e, "VIEWER") for e in (with_account, without_account)]
    assert [a["errors"] for a in again] == [[], []]
    listed = {(n["email"], n["role"]) for n in await org_invitations(api, org_a)}
    assert listed == {(with_account, "VIEWER"), (without_account, "VIEWER")}
    # The only refusal that depends on the e-mail is for the organization's own members,
    # whom the admin already sees.
    member = await invite(api, org_a, org_a.emails["viewer"].upper())
    assert member["errors"] == [
        {
            "__typename": "ConflictError",
            "message": "already a member of this organization",
            "code": "CONFLICT",
            "path": ["input", "email"],
        }
    ]
    bad = await invite(api, org_a, "not an e-mail")
    assert bad["invitation"] is None
    assert bad["errors"][0]["code"] == "BAD_USER_INPUT"
    assert bad["errors"][0]["path"] == ["input", "email"]


async def test_who_may_invite_which_role(api: Api, org_a: Org, org_b: Org) -> None:
    outcomes = {}
    for actor in ROLES:
        for role in ROLES:
            done = await invite(api, org_a, fresh_email(), role.upper(), by=actor)
            outcomes[(actor, role)] = done["errors"][0]["code"] if done["errors"] else "OK"
            assert (done["invitation"] is None) == bool(done["errors"])
    expected = {
        (actor, role): (
            "OK" if actor == "owner" or (actor == "admin" and role != "owner") else "FORBIDDEN"
        )
        for actor in ROLES
        for role in ROLES
    }
    assert outcomes == expected
    # 7 invitations were made (4 by the owner, 3 by the admin); B has none of them.
    assert len(await org_invitations(api, org_a, "owner")) == 7
    assert await org_invitations(api, org_b, "owner") == []


async def test_an_invitee_sees_and_accepts_with_the_invited_role(
    api: Api, org_a: Org, org_b: Org
) -> None:
    invitee = org_b.tokens["viewer"]
    gid = await invitation_id(api, org_a, org_b.emails["viewer"].upper(), "ADMIN")
    seen = await viewer_invitations(api, invitee)
    assert seen == [
        {
            "id": gid,
            "email": org_b.emails["viewer"].upper(),
            "role": "ADMIN",
            "status": "PENDING",
            "organization": {"name": "Org a", "slug": org_a.slug},
        }
    ]
    # Nobody else is addressed by it.
    assert await viewer_invitations(api, org_b.tokens["member"]) == []
    assert await viewer_invitations(api, org_a.tokens["admin"]) == []

    done = await mutate(
        api,
        "acceptInvitation",
        {"id": gid},
        "member { role user { email } organization { slug } invitedBy { email } } invitation { status }",
        token=invitee,
    )
    assert done == {
        "member": {
            "role": "ADMIN",
            "user": {"email": org_b.emails["viewer"]},
            "organization": {"slug": org_a.slug},
            # Users of A are visible with X-Organization: A only (asked below).
            "invitedBy": None,
        },
        "invitation": {"status": "ACCEPTED"},
        "errors": [],
    }
    assert await memberships(api, invitee) == {org_b.slug: "VIEWER", org_a.slug: "ADMIN"}
    assert await viewer_invitations(api, invitee) == []
    assert await org_invitations(api, org_a) == []  # pending ones only
    # The new admin works in A as one.
    body = await api(
        "{ organization { members(first: 20) { totalCount nodes { role user { email } invitedBy { email } } } } }",
        token=invitee,
        org=org_a.slug,
    )
    members = body["data"]["organization"]["members"]
    assert members["totalCount"] == 5
    assert {
        "role": "ADMIN",
        "user": {"email": org_b.emails["viewer"]},
        "invitedBy": {"email": org_a.emails["admin"]},
    } in members["nodes"]
    again = await mutate(api, "acceptInvitation", {"id": gid}, "member { role }", token=invitee)
    assert again["errors"][0]["code"] == "CONFLICT"
    assert again["errors"][0]["message"] == "this invitation was already accepted"
    # Audited: the invitation's creation by the admin, its acceptance and the membership by
    # the invitee.
    audit = await api(
        """{ auditLog(first: 20) { nodes { action entityType actor { email } } } }""",
        as_=(org_a, "owner"),
    )
    entries = [
        (n["action"], n["entityType"], n["actor"]["email"] if n["actor"] else None)
        for n in audit["data"]["auditLog"]["nodes"]
    ]
    assert ("insert", "INVITATION", org_a.emails["admin"]) in [
        (a.lower(), t, e) for a, t, e in entries
    ]
    assert ("update", "INVITATION", org_b.emails["viewer"]) in [
        (a.lower(), t, e) for a, t, e in entries
    ]
    assert ("insert", "MEMBER", org_b.emails["viewer"]) in [
        (a.lower(), t, e) for a, t, e in entries
    ]


async def test_an_email_without_an_account_accepts_after_signing_up(api: Api, org_a: Org) -> None:
    email = fresh_email("later")
    gid = await invitation_id(api, org_a, email, "VIEWER")
    signed = await sign_up(api, email.upper())
    assert signed["errors"] == []
    token = signed["token"]
    assert [n["id"] for n in await viewer_invitations(api, token)] == [gid]
    done = await mutate(api, "acceptInvitation", {"id": gid}, "member { role }", token=token)
    assert done == {"member": {"role": "VIEWER"}, "errors": []}
    assert await memberships(api, token) == {org_a.slug: "VIEWER"}


async def test_only_the_invitee_can_accept_or_decline(api: Api, org_a: Org, org_b: Org) -> None:
    gid = await invitation_id(api, org_a, org_b.emails["member"])
    for org, role in [(org_a, r) for r in ROLES] + [(org_b, r) for r in ROLES if r != "member"]:
        for name in ("acceptInvitation", "declineInvitation"):
            done = await mutate(api, name, {"id": gid}, "invitation { id }", token=org.tokens[role])
            assert done["invitation"] is None
            assert done["errors"] == [
                {
                    "__typename": "NotFoundError",
                    "message": "no such invitation",
                    "code": "NOT_FOUND",
                    "path": ["input", "id"],
                }
            ], (org.label, role, name)
    # Still pending, and nobody joined.
    assert [n["id"] for n in await viewer_invitations(api, org_b.tokens["member"])] == [gid]
    body = await api("{ organization { members(first: 20) { totalCount } } }", as_=(org_a, "owner"))
    assert body["data"]["organization"]["members"]["totalCount"] == 4
    # Not an invitation id at all: a typed error, not a 500.
    wrong = await mutate(
        api,
        "acceptInvitation",
        {"id": org_a.task(0)},
        "invitation { id }",
        token=org_b.tokens["member"],
    )
    assert wrong["errors"][0]["code"] == "BAD_USER_INPUT"
    garbage = await mutate(
        api,
        "declineInvitation",
        {"id": "garbage"},
        "invitation { id }",
        token=org_b.tokens["member"],
    )
    assert garbage["errors"][0]["code"] == "BAD_USER_INPUT"
    anonymous = await api(
        "mutation($id: ID!) { acceptInvitation(input: {id: $id}) { errors { code } } }", {"id": gid}
    )
    assert anonymous["data"]["acceptInvitation"]["errors"] == [{"code": "UNAUTHENTICATED"}]


async def expired_invitation(org: Org, email: str) -> str:
    """An invitation that expired yesterday, written as the org's admin."""
    context = TenantContext(organization_id=org.id, user_id=org.users["admin"], role="admin")
    invitation = tables.OrganizationInvitation(
        organization_id=org.id,
        email=email,
        role="member",
        invited_by=org.users["admin"],
        created_at=datetime.now(UTC) - timedelta(days=8),
        expires_at=datetime.now(UTC) - timedelta(days=1),
    )
    async with request_transaction(context):
        await tables.OrganizationInvitation.insert(invitation)
    return to_global_id("Invitation", invitation.id)


async def test_expired_revoked_and_declined_invitations_cannot_be_accepted(
    api: Api, org_a: Org, org_b: Org
) -> None:
    invitee = org_b.tokens["owner"]
    email = org_b.emails["owner"]
    expired = await expired_invitation(org_a, email)
    assert await viewer_invitations(api, invitee) == []  # expired ones are not offered
    listed = await org_invitations(api, org_a)
    assert [(n["id"], n["status"]) for n in listed] == [(expired, "EXPIRED")]
    done = await mutate(api, "acceptInvitation", {"id": expired}, "member { role }", token=invitee)
    assert done["errors"] == [
        {
            "__typename": "ConflictError",
            "message": "this invitation has expired: ask for a new one",
            "code": "CONFLICT",
            "path": ["input", "id"],
        }
    ]

    revoked = await invitation_id(api, org_a, email)  # replaces the expired one
    assert [n["status"] for n in await org_invitations(api, org_a)] == ["PENDING"]
    gone = await mutate(
        api,
        "revokeInvitation",
        {"id": revoked},
        "invitation { status revokedAt }",
        as_=(org_a, "admin"),
    )
    assert gone["errors"] == []
    assert gone["invitation"]["status"] == "REVOKED"
    assert gone["invitation"]["revokedAt"] is not None
    assert await viewer_invitations(api, invitee) == []
    done = await mutate(api, "acceptInvitation", {"id": revoked}, "member { role }", token=invitee)
    assert done["errors"][0]["message"] == "this invitation was already revoked"
    twice = await mutate(
        api, "revokeInvitation", {"id": revoked}, "invitation { id }", as_=(org_a, "admin")
    )
    assert twice["errors"][0]["code"] == "CONFLICT"

    declined = await invitation_id(api, org_a, email)
    no = await mutate(
        api, "declineInvitation", {"id": declined}, "invitation { status }", token=invitee
    )
    assert no == {"invitation": {"status": "DECLINED"}, "errors": []}
    done = await mutate(api, "acceptInvitation", {"id": declined}, "member { role }", token=invitee)
    assert done["errors"][0]["message"] == "this invitation was already declined"
    assert org_a.slug not in await memberships(api, invitee)


async def test_revoking_follows_the_role_rules(api: Api, org_a: Org) -> None:
    owner_invite = await invite(api, org_a, fresh_email(), "OWNER", by="owner")
    gid = owner_invite["invitation"]["id"]
    for role in ("admin", "member", "viewer"):
        done = await mutate(
            api, "revokeInvitation", {"id": gid}, "invitation { id }", as_=(org_a, role)
        )
        assert done["errors"][0]["code"] == "FORBIDDEN", role
    # An admin cannot replace it either (re-inviting revokes the pending one).
    replaced = await invite(api, org_a, owner_invite["invitation"]["email"], "MEMBER")
    assert replaced["errors"][0]["code"] == "FORBIDDEN"
    done = await mutate(
        api, "revokeInvitation", {"id": gid}, "invitation { status }", as_=(org_a, "owner")
    )
    assert done == {"invitation": {"status": "REVOKED"}, "errors": []}
    member_invite = await invitation_id(api, org_a, fresh_email())
    done = await mutate(
        api,
        "revokeInvitation",
        {"id": member_invite},
        "invitation { status }",
        as_=(org_a, "admin"),
    )
    assert done == {"invitation": {"status": "REVOKED"}, "errors": []}


async def test_an_invitation_of_one_tenant_is_invisible_to_the_other(
    api: Api, org_a: Org, org_b: Org
) -> None:
    gid = await invitation_id(api, org_a, fresh_email())
    for role in ROLES:
        node = await api("query($id: ID!) { node(id: $id) { id } }", {"id": gid}, as_=(org_b, role))
        assert node["data"]["node"] is None, role
        done = await mutate(
            api, "revokeInvitation", {"id": gid}, "invitation { id }", as_=(org_b, role)
        )
        assert done["errors"][0]["code"] == (
            "NOT_FOUND" if role in ("owner", "admin") else "FORBIDDEN"
        )
    assert await org_invitations(api, org_b, "owner") == []
    # Asking for A's invitations while in B: nothing (and A by slug is not B's to show).
    body = await api(
        "query($s: String!) { organization(slug: $s) { invitations(first: 5) { nodes { id } } } }",
        {"s": org_a.slug},
        as_=(org_b, "owner"),
    )
    assert body["data"]["organization"] is None
    # Inside A, only admins and owners see who was invited.
    for role in ROLES:
        body = await api(ORG_INVITATIONS, as_=(org_a, role))
        if role in ("owner", "admin"):
            assert [n["id"] for n in body["data"]["organization"]["invitations"]["nodes"]] == [gid]
            node = await api(
                "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, as_=(org_a, role)
            )
            assert node["data"]["node"] == {"id": gid}
        else:
            assert body["data"] is None or body["data"]["organization"] is None
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            node = await api(
                "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, as_=(org_a, role)
            )
            assert node["data"]["node"] is None, role


async def test_viewer_invitations_fall_back_to_the_resolvers_and_agree(
    api: Api, org_a: Org, org_b: Org, pool: object
) -> None:
    """The compiler does not know Viewer.invitations: the request is answered by the
    resolvers, with the same answer as an app that never compiles."""
    await invitation_id(api, org_a, org_b.emails["admin"], "VIEWER")
    query = (
        "{ viewer { user { email } memberships(first: 5) { totalCount } invitations(first: 5) "
        "{ totalCount pageInfo { hasNextPage } nodes { role status organization { name } } } } }"
    )
    compiled = await api.post(query, token=org_b.tokens["admin"])
    reference_app = create_app(Settings(taskql_sql_stats=True, taskql_compiled_queries=False))
    transport = httpx.ASGITransport(app=reference_app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        reference = await client.post(
            "/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {org_b.tokens['admin']}"},
        )
    assert compiled.status_code == reference.status_code == 200
    assert compiled.json()["data"] == reference.json()["data"]
    assert compiled.json()["data"]["viewer"]["invitations"] == {
        "totalCount": 1,
        "pageInfo": {"hasNextPage": False},
        "nodes": [{"role": "VIEWER", "status": "PENDING", "organization": {"name": "Org a"}}],
    }
    # A query the compiler does know still takes one statement after the tenant settings.
    known = await api.post("{ viewer { user { email } } }", token=org_b.tokens["admin"])
    assert known.json()["extensions"]["sqlStatements"] == 2
    assert compiled.json()["extensions"]["sqlStatements"] > 2


async def test_the_demo_data_has_a_pending_invitation_for_erin(api: Api) -> None:
    from db import demo

    await demo.load_demo()  # None when another test loaded it already
    body = await api(
        'mutation { logIn(input: {email: "erin@globex.test", password: "taskql-demo"}) { token } }'
    )
    token = body["data"]["logIn"]["token"]
    seen = await viewer_invitations(api, token)
    assert [(n["email"], n["role"], n["organization"]["slug"]) for n in seen] == [
        ("erin@globex.test", "MEMBER", "acme")
    ]
    assert {n["status"] for n in seen} == {"PENDING"}
