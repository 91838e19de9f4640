"""Slack's Block Kit limits, checked: what Slack would refuse (``invalid_blocks``) or cut, said in words.

The limits (Slack's Block Kit reference): a message has at most 50 blocks and a fallback ``text`` of at most
40,000 characters (runalert keeps its own under 4,000); a ``header`` is ``plain_text`` of 1 to 150 characters; a
``section`` has a text of 1 to 3,000 characters and/or 1 to 10 fields of 1 to 2,000 each; a ``context`` has 1 to 10
elements, each text at most 3,000; an ``actions`` block 1 to 25 elements, a button's label ``plain_text`` of 1 to 75
characters, its ``url`` at most 3,000 and its ``action_id`` at most 255.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LIMITS", "block_kit_problems"]

LIMITS: Mapping[str, int] = {
    "blocks": 50,
    "fallback": 4000,
    "header": 150,
    "section_text": 3000,
    "section_fields": 10,
    "field": 2000,
    "context_elements": 10,
    "context_text": 3000,
    "actions_elements": 25,
    "button_text": 75,
    "button_url": 3000,
    "action_id": 255,
}
"""The limits checked (``fallback`` is runalert's own: Slack's is 40,000)."""


def _text(problems: list[str], where: str, obj: Any, limit: int, *, plain: bool = False) -> None:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("text"), str):
        problems.append(f"{where}: a text object with a string 'text' is required")
        return
    if plain and obj.get("type") != "plain_text":
        problems.append(f"{where}: must be plain_text, not {obj.get('type')!r}")
    elif obj.get("type") not in ("plain_text", "mrkdwn"):
        problems.append(f"{where}: type must be plain_text or mrkdwn, not {obj.get('type')!r}")
    length = len(obj["text"])
    if not 1 <= length <= limit:
        problems.append(f"{where}: text is {length} characters (1 to {limit} allowed)")


def block_kit_problems(message: Mapping[str, Any]) -> list[str]:
    """What in ``message`` (``{"text": ..., "blocks": [...]}``) breaks Block Kit's limits; empty when it is valid.

    Each problem names the block (by index and type) and the limit, e.g. ``"blocks[2] section: 11 fields (at most
    10)"``. Only the block types runalert writes are known (header, section, context, actions); any other is a
    problem too, so that a new kind of block cannot slip through unchecked.
    """
    problems: list[str] = []
    text = message.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text: the fallback text is required (notifications and screen readers show it)")
    elif len(text) > LIMITS["fallback"]:
        problems.append(f"text: {len(text)} characters (at most {LIMITS['fallback']})")
    blocks = message.get("blocks", [])
    if not isinstance(blocks, list):
        return [*problems, "blocks: must be a list"]
    if len(blocks) > LIMITS["blocks"]:
        problems.append(f"blocks: {len(blocks)} blocks (at most {LIMITS['blocks']})")
    for index, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, Mapping) else None
        where = f"blocks[{index}] {kind}"
        if kind == "header":
            _text(problems, where, block.get("text"), LIMITS["header"], plain=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: needs a text or fields")
            if "text" in block:
                _text(problems, f"{where} text", block["text"], LIMITS["section_text"])
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= LIMITS["section_fields"]:
                    count = len(fields) if isinstance(fields, list) else "no list of"
                    problems.append(f"{where}: {count} fields (1 to {LIMITS['section_fields']} allowed)")
                else:
                    for number, field in enumerate(fields):
                        _text(problems, f"{where} fields[{number}]", field, LIMITS["field"])
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= LIMITS["context_elements"]:
                count = len(elements) if isinstance(elements, list) else "no list of"
                problems.append(f"{where}: {count} elements (1 to {LIMITS['context_elements']} allowed)")
            else:
                for number, element in enumerate(elements):
                    _text(problems, f"{where} elements[{number}]", element, LIMITS["context_text"])
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= LIMITS["actions_elements"]:
                count = len(elements) if isinstance(elements, list) else "no list of"
                problems.append(f"{where}: {count} elements (1 to {LIMITS['actions_elements']} allowed)")
                continue
            for number, element in enumerate(elements):
                at = f"{where} elements[{number}]"
                if not isinstance(element, Mapping) or element.get("type") != "button":
                    problems.append(f"{at}: only buttons are written by runalert")
                    continue
                _text(problems, at, element.get("text"), LIMITS["button_text"], plain=True)
                url = element.get("url")
                if url is not None and (not isinstance(url, str) or not 1 <= len(url) <= LIMITS["button_url"]):
                    problems.append(f"{at}: url must be 1 to {LIMITS['button_url']} characters")
                action_id = element.get("action_id")
                if action_id is not None and len(str(action_id)) > LIMITS["action_id"]:
                    problems.append(f"{at}: action_id longer than {LIMITS['action_id']} characters")
        else:
            problems.append(f"{where}: not a block type runalert writes (header, section, context, actions)")
    return problems
