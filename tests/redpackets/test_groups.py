"""Groups over the API: creating, viewing, adding members and listing their packets."""

import uuid

import pytest

from redpackets.models import ChatGroup, GroupMembership
from redpackets.services import packet_send
from tests.assertions import assert_error
from tests.factories import UserFactory, group_with_members, login

pytestmark = [pytest.mark.django_db(transaction=True)]




# --- creating -------------------------------------------------------------------------------


def test_creating_a_group_makes_the_creator_its_owner_and_a_member():
    owner, alice, bob = UserFactory(), UserFactory(), UserFactory()
    client = login(owner)

    response = client.post("/api/v1/groups", {"name": "Family", "members": [alice.username, bob.username]},
                           format="json")

    assert response.status_code == 201
    body = response.json()
    assert {"id", "name", "owner", "members"} <= set(body)
    assert body["name"] == "Family"
    assert body["owner"] == owner.username
    assert sorted(body["members"]) == sorted([owner.username, alice.username, bob.username])
    group = ChatGroup.objects.get(id=body["id"])
    assert group.owner == owner
    assert GroupMembership.objects.filter(group=group).count() == 3


def test_creating_a_group_with_the_owner_or_a_member_listed_twice_keeps_one_membership_each():
    owner, alice = UserFactory(), UserFactory()
    client = login(owner)

    response = client.post(
        "/api/v1/groups", {"name": "Dupes", "members": [alice.username, alice.username, owner.username]},
        format="json",
    )

    assert response.status_code == 201
    assert sorted(response.json()["members"]) == sorted([owner.username, alice.username])
    assert GroupMembership.objects.filter(group_id=response.json()["id"]).count() == 2


def test_creating_a_group_without_members_makes_a_group_of_one():
    owner = UserFactory()

    response = login(owner).post("/api/v1/groups", {"name": "Just me"}, format="json")

    assert response.status_code == 201
    assert response.json()["members"] == [owner.username]


def test_creating_a_group_with_an_unknown_member_is_refused_and_creates_nothing():
    owner, alice = UserFactory(), UserFactory()
    client = login(owner)

    response = client.post("/api/v1/groups", {"name": "Family", "members": [alice.username, "nobody-here"]},
                           format="json")

    assert_error(response, 400, "validation_error", fields=["members"])
    assert "nobody-here" in response.json()["error"]["fields"]["members"][0]
    assert not ChatGroup.objects.exists()
    assert not GroupMembership.objects.exists()


def test_creating_a_group_without_a_name_is_refused():
    owner = UserFactory()

    response = login(owner).post("/api/v1/groups", {"members": []}, format="json")

    assert_error(response, 400, "validation_error", fields=["name"])
    assert not ChatGroup.objects.exists()


def test_creating_a_group_needs_authentication(api):
    response = api.post("/api/v1/groups", {"name": "Family", "members": []}, format="json")

    assert_error(response, 401, "not_authenticated")
    assert not ChatGroup.objects.exists()


# --- viewing ----------------------------------------------------------------------------------


def test_a_member_sees_the_group():
    owner, alice = UserFactory(), UserFactory()
    group = group_with_members(owner, [alice])

    response = login(alice).get(f"/api/v1/groups/{group.id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(group.id)
    assert body["name"] == group.name
    assert body["owner"] == owner.username
    assert sorted(body["members"]) == sorted([owner.username, alice.username])


def test_a_non_member_cannot_see_the_group():
    owner, alice, outsider = UserFactory(), UserFactory(), UserFactory()
    group = group_with_members(owner, [alice])

    response = login(outsider).get(f"/api/v1/groups/{group.id}")

    assert_error(response, 404, "not_found")


def test_an_unknown_group_is_not_found():
    user = UserFactory()

    response = login(user).get(f"/api/v1/groups/{uuid.uuid4()}")

    assert_error(response, 404, "not_found")


# --- adding members ------------------------------------------------------------------------------


def test_the_owner_adds_a_member():
    owner, alice, carol = UserFactory(), UserFactory(), UserFactory()
    group = group_with_members(owner, [alice])

    response = login(owner).post(f"/api/v1/groups/{group.id}/members", {"username": carol.username}, format="json")

    assert response.status_code == 201
    assert carol.username in response.json()["members"]
    assert GroupMembership.objects.filter(group=group, user=carol).exists()
    seen_by_carol = login(carol).get(f"/api/v1/groups/{group.id}")
    assert seen_by_carol.status_code == 200
    assert sorted(seen_by_carol.json()["members"]) == sorted([owner.username, alice.username, carol.username])


def test_adding_someone_who_is_already_a_member_adds_no_second_membership():
    owner, alice = UserFactory(), UserFactory()
    group = group_with_members(owner, [alice])

    response = login(owner).post(f"/api/v1/groups/{group.id}/members", {"username": alice.username}, format="json")

    assert response.status_code in (200, 201)
    assert GroupMembership.objects.filter(group=group, user=alice).count() == 1


def test_a_member_who_is_not_the_owner_cannot_add_members():
    owner, alice, carol = UserFactory(), UserFactory(), UserFactory()
    group = group_with_members(owner, [alice])

    response = login(alice).post(f"/api/v1/groups/{group.id}/members", {"username": carol.username}, format="json")

    assert_error(response, 403, "permission_denied")
    assert not GroupMembership.objects.filter(group=group, user=carol).exists()


def test_a_non_member_cannot_add_members():
    owner, outsider, carol = UserFactory(), UserFactory(), UserFactory()
    group = group_with_members(owner, [])

    response = login(outsider).post(f"/api/v1/groups/{group.id}/members", {"username": carol.username},
                                    format="json")

    assert_error(response, 404, "not_found")
    assert not GroupMembership.objects.filter(group=group, user__in=[outsider, carol]).exists()


def test_adding_an_unknown_user_is_refused():
    owner = UserFactory()
    group = group_with_members(owner, [])

    response = login(owner).post(f"/api/v1/groups/{group.id}/members", {"username": "nobody-here"}, format="json")

    assert_error(response, 400, "validation_error", fields=["username"])
    assert GroupMembership.objects.filter(group=group).count() == 1


# --- listing packets ----------------------------------------------------------------------------


def _send(sender, group, total):
    return packet_send(sender=sender, group_id=group.id, kind="random", share_count=2, total_amount=total)


def test_a_member_lists_the_groups_packets_newest_first():
    owner, alice = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(owner, [alice])
    other_group = group_with_members(owner, [alice], name="Other")
    first, second, third = _send(owner, group, 100), _send(owner, group, 200), _send(owner, group, 300)
    _send(owner, other_group, 400)

    response = login(alice).get(f"/api/v1/groups/{group.id}/packets")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    assert [p["id"] for p in body["results"]] == [str(third.id), str(second.id), str(first.id)]
    assert [p["total_amount"] for p in body["results"]] == [300, 200, 100]
    assert body["next"] is None
    assert all(p["group"] == str(group.id) and p["sender"] == owner.username for p in body["results"])


def test_the_packet_list_pages_with_a_cursor():
    owner, alice = UserFactory(balance=10_000), UserFactory()
    group = group_with_members(owner, [alice])
    packets = [_send(owner, group, 100 + i) for i in range(3)]
    client = login(alice)

    first_page = client.get(f"/api/v1/groups/{group.id}/packets", {"page_size": 2})
    second_page = client.get(first_page.json()["next"])

    assert first_page.status_code == 200
    assert [p["id"] for p in first_page.json()["results"]] == [str(packets[2].id), str(packets[1].id)]
    assert first_page.json()["next"]
    assert second_page.status_code == 200
    assert [p["id"] for p in second_page.json()["results"]] == [str(packets[0].id)]
    assert second_page.json()["next"] is None


def test_the_packet_list_of_a_group_without_packets_is_empty():
    owner = UserFactory()
    group = group_with_members(owner, [])

    response = login(owner).get(f"/api/v1/groups/{group.id}/packets")

    assert response.status_code == 200
    assert response.json() == {"results": [], "next": None}


def test_a_non_member_cannot_list_the_groups_packets():
    owner, outsider = UserFactory(balance=1000), UserFactory()
    group = group_with_members(owner, [UserFactory()])
    _send(owner, group, 100)

    response = login(outsider).get(f"/api/v1/groups/{group.id}/packets")

    assert_error(response, 404, "not_found")


def test_a_member_lists_their_groups_newest_first_and_only_theirs():
    # Given a user in two groups and a group they are not in
    me, friend, stranger = UserFactory(), UserFactory(), UserFactory()
    older = group_with_members(me, [friend], name="Older")
    newer = group_with_members(friend, [me], name="Newer")
    group_with_members(stranger, [friend], name="Not mine")

    # When they list their groups
    response = login(me).get("/api/v1/groups")

    # Then they see exactly their two, newest first, in the list shape
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    assert [g["id"] for g in body["results"]] == [str(newer.id), str(older.id)]
    assert body["results"][0]["owner"] == friend.username
