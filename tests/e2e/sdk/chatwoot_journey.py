"""A visitor's whole journey through PyPI's chatwoot-python-client (generated from Chatwoot's
published client API document), against Omega behind the real Envoy.

Usage: chatwoot_journey.py BASE_URL INBOX_IDENTIFIER. BASE_URL ends in "/", as the SDK's own
default does, so every call goes to //public/api/v1/... Prints one JSON object with what the
Rust test checks; exits non-zero on the first failure.

Besides driving the SDK, every answer's raw JSON is checked against the document's schema
(the SDK's swagger_types): each documented field present, with the documented type, except
where the document is wrong about Chatwoot itself (see DOCUMENT_ERRATA).
"""

import json
import sys

import chatwoot_client
from chatwoot_client.rest import ApiException

# Where Chatwoot's published document disagrees with Chatwoot's own views (the jbuilder files
# render these as integers, and content_attributes as an object): Omega follows the views.
DOCUMENT_ERRATA = {
    ("PublicMessage", "id"): int,
    ("PublicMessage", "message_type"): int,
    ("PublicMessage", "created_at"): int,
    ("PublicMessage", "conversation_id"): int,
    ("PublicMessage", "content_attributes"): dict,
    ("PublicConversation", "inbox_id"): int,
}

TYPES = {"int": int, "str": str, "bool": bool, "object": object}

checked = []


def check_schema(model_name, value):
    """Every field of the documented model is present in `value`, with its documented type."""
    model = getattr(chatwoot_client.models, model_name)
    assert isinstance(value, dict), f"{model_name}: not an object: {value!r}"
    for attribute, kind in model.swagger_types.items():
        key = model.attribute_map[attribute]
        assert key in value, f"{model_name}.{key} missing: {value}"
        field = value[key]
        if field is None:
            continue
        expected = DOCUMENT_ERRATA.get((model_name, key))
        if expected is not None:
            assert isinstance(field, expected), f"{model_name}.{key}: {field!r} is not {expected.__name__}"
        elif kind.startswith("list["):
            assert isinstance(field, list), f"{model_name}.{key}: {field!r} is not a list"
            inner = kind[5:-1]
            if hasattr(chatwoot_client.models, inner) and inner != "Message":
                for item in field:
                    check_schema(inner, item)
            elif inner == "Message":
                # The document's conversation.messages are Chatwoot's public messages.
                for item in field:
                    check_schema("PublicMessage", item)
        elif kind in TYPES and TYPES[kind] is not object:
            # bool is an int in Python: keep them apart.
            ok = isinstance(field, TYPES[kind]) and not (kind == "int" and isinstance(field, bool))
            assert ok, f"{model_name}.{key}: {field!r} is not {kind}"
    checked.append(model_name)


def raw(call, *args, **kwargs):
    """The call's answer as JSON (the SDK's HTTP layer, without its model decoding)."""
    response = call(*args, _preload_content=False, **kwargs)
    assert response.status == 200, f"HTTP {response.status}: {response.data!r}"
    return json.loads(response.data)


def main():
    base, inbox_id = sys.argv[1], sys.argv[2]
    config = chatwoot_client.Configuration()
    config.host = base
    client = chatwoot_client.ApiClient(config)
    inboxes = chatwoot_client.InboxAPIApi(client)
    contacts = chatwoot_client.ContactsAPIApi(client)
    conversations = chatwoot_client.ConversationsAPIApi(client)
    messages = chatwoot_client.MessagesAPIApi(client)
    out = {}

    inbox = inboxes.get_details_of_a_inbox(inbox_id)
    check_schema("PublicInbox", raw(inboxes.get_details_of_a_inbox, inbox_id))
    out["inbox_name"] = inbox.name

    payload = chatwoot_client.PublicContactCreateUpdatePayload(
        name="Nora", email="nora@example.com", custom_attributes={"plan": "pro"}
    )
    contact = contacts.create_a_contact(payload, inbox_id)
    source = contact.source_id
    out["contact_id"] = int(contact.id)
    check_schema("PublicContact", raw(contacts.get_details_of_a_contact, inbox_id, source))
    got = raw(contacts.get_details_of_a_contact, inbox_id, source)
    out["custom_attributes"] = got["custom_attributes"]
    update = chatwoot_client.PublicContactCreateUpdatePayload(name="Nora Diaz")
    out["updated_name"] = contacts.update_a_contact(update, inbox_id, source).name

    created = raw(
        conversations.create_a_conversation,
        chatwoot_client.PublicConversationCreatePayload(custom_attributes={"topic": "booking"}),
        inbox_id,
        source,
    )
    check_schema("PublicConversation", created)
    conversation_id = created["id"]
    out["conversation_id"] = conversation_id
    out["conversation_custom_attributes"] = created["custom_attributes"]

    sent = []
    for text, echo in [("Hi, is Saturday open?", "e-1"), ("Around 10am", "e-2")]:
        body = chatwoot_client.PublicMessageCreatePayload(content=text, echo_id=echo)
        message = raw(messages.create_a_message, body, inbox_id, source, conversation_id)
        check_schema("PublicMessage", message)
        sent.append(message["id"])
    out["sent"] = sent
    # The SDK's models decode the same answers (ids arrive as the document's strings).
    listed = messages.list_all_converation_messages(inbox_id, source, conversation_id)
    out["listed"] = [int(m.id) for m in listed]
    out["listed_content"] = [m.content for m in listed]
    for message in raw(messages.list_all_converation_messages, inbox_id, source, conversation_id):
        check_schema("PublicMessage", message)
    listed_conversations = raw(conversations.list_all_contact_conversations, inbox_id, source)
    for item in listed_conversations:
        check_schema("PublicConversation", item)
    out["conversations"] = [c["id"] for c in listed_conversations]

    submitted = chatwoot_client.PublicMessageUpdatePayload(submitted_values={"email": "nora@example.com"})
    updated = raw(messages.update_a_message, submitted, inbox_id, source, conversation_id, sent[0])
    check_schema("PublicMessage", updated)
    out["submitted"] = updated["content_attributes"]

    # This SDK version has no typing or status calls: the same client's generic call, with the
    # document's query parameter.
    path = "/public/api/v1/inboxes/{inbox}/contacts/{contact}/conversations/{conversation}/"
    params = {"inbox": inbox_id, "contact": source, "conversation": conversation_id}
    for typing in ["on", "off", "recording"]:
        response = client.call_api(
            path + "toggle_typing", "POST", params, [("typing_status", typing)], {"Accept": "application/json"},
            _preload_content=False,
        )[0]
        assert response.status == 200, response.data
    response = client.call_api(
        path + "toggle_status", "POST", params, [], {"Accept": "application/json"}, _preload_content=False
    )[0]
    assert response.status == 200, response.data
    toggled = json.loads(response.data)
    check_schema("PublicConversation", toggled)
    out["status"] = toggled["status"]

    # Errors come back as the SDK's own exception, with Omega's status.
    try:
        contacts.get_details_of_a_contact(inbox_id, "no-such-contact")
        out["unknown_contact"] = 200
    except ApiException as err:
        out["unknown_contact"] = err.status
    out["schemas_checked"] = sorted(set(checked))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
