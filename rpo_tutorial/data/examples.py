"""Small fixed prompt sets used by the foundation demo and notebooks 02-03.

The first two echo the paper's motivating example: two differently worded questions about
photosynthesis / plants and sunlight, whose answers teach each other even though the prompts
differ. The others form a second related pair per topic plus unrelated prompts.
"""
from __future__ import annotations

EXAMPLE_PROMPTS: list[tuple[str, str]] = [
    ("plants", "Explain the process of photosynthesis."),
    ("plants", "How do plants turn sunlight into energy?"),
    ("cooking", "How do I bake a simple loaf of bread at home?"),
    ("cooking", "What is the easiest way to make sourdough bread?"),
    ("travel", "What should I pack for a week-long hiking trip?"),
    ("travel", "Which essentials do I need for a camping holiday in the mountains?"),
    ("finance", "How can I start saving money for retirement?"),
    ("finance", "What are good ways to build an emergency fund?"),
]


def example_texts() -> list[str]:
    return [text for _, text in EXAMPLE_PROMPTS]


def example_topics() -> list[str]:
    return [topic for topic, _ in EXAMPLE_PROMPTS]
