"""The LLM generator's requests (PAPER §3.2 asks a language model for ≈ 1000 diverse captions per concept): one
prompt per bank kind, the suffixes asking for plain lines or a JSON object, and the JSON schema of structured
replies."""

PROMPTS = {
    "object": (
        "Write {batch} different one-sentence captions for photographs that show {a_concept}. Vary the setting, "
        "the viewpoint, the lighting, what the {concept} is doing and what surrounds it. Every caption must "
        "contain the word \"{concept}\" and be at most 25 words long."
    ),
    "style": (
        "Write {batch} different one-sentence captions for pictures made in the {concept} style. Vary the "
        "subject (people, animals, places, objects), the setting and the mood. Every caption must contain the "
        "words \"{concept}\" and be at most 25 words long."
    ),
    "attribute": (
        "Write {batch} different one-sentence captions for photographs of people, animals or things with "
        "{concept}. Vary who or what it is, the setting and the lighting. Every caption must contain the words "
        "\"{concept}\" and be at most 25 words long."
    ),
    "scene": (
        "Write {batch} different one-sentence captions for photographs of places, landscapes and things seen in "
        "the {concept}. Vary the place, the subject and the viewpoint. Every caption must contain the words "
        "\"{concept}\" and be at most 25 words long."
    ),
}
TEXT_SUFFIX = " Answer with the captions only, one per line, without numbering."
JSON_SUFFIX = " Answer with a JSON object {{\"captions\": [...]}}."
SCHEMA = {
    "name": "captions",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"captions": {"type": "array", "items": {"type": "string"}}},
        "required": ["captions"],
        "additionalProperties": False,
    },
}
