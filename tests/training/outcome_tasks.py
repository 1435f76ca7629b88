"""Small tasks unlike the demo, for the outcome tests on the real pretrained model.

- `country_code_task()`: a city's country as its two-letter ISO code, for supervised fine-tuning.
  Training lines and held-out prompts use disjoint wordings of the question.
- `concise_answer_task()`: preference pairs whose preferred answer is one short sentence and whose
  non-preferred answer is a long, padded one, for DPO. Held-out prompts ask about other countries.

Deterministic: the same seed gives the same lines.
"""

import json
import random

CITIES = {
    "Lima": "PE", "Paris": "FR", "Berlin": "DE", "Madrid": "ES", "Rome": "IT", "Tokyo": "JP",
    "Cairo": "EG", "Toronto": "CA", "Sydney": "AU", "Mumbai": "IN", "Moscow": "RU", "Beijing": "CN",
    "Nairobi": "KE", "Lisbon": "PT", "Oslo": "NO", "Dublin": "IE",
}
SYSTEM = "Answer with the two-letter ISO country code only."
TRAIN_WORDINGS = ["Which country is {city} in?", "{city} lies in which country?", "Country of {city}?",
                  "In what country would I find {city}?", "Name the country that {city} is in.",
                  "{city}: which country?", "Tell me the country of the city {city}.",
                  "What country does {city} belong to?", "I am flying to {city}. Which country is that?",
                  "Where is {city}? Give the country."]
HELDOUT_WORDINGS = ["My friend lives in {city}. What country is that?",
                    "Which nation has the city of {city}?"]


def _chat(question, answer=None):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def country_code_task(seed=0):
    """(training lines, held-out {messages, expected} rows): 160 lines, 32 held-out prompts."""
    rng = random.Random(seed)
    train = [{"messages": _chat(wording.format(city=city), code)}
             for city, code in CITIES.items() for wording in TRAIN_WORDINGS]
    rng.shuffle(train)
    heldout = [{"messages": _chat(wording.format(city=city)), "expected": code}
               for city, code in CITIES.items() for wording in HELDOUT_WORDINGS]
    return train, heldout


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Spain": "Madrid", "Italy": "Rome", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "India": "New Delhi", "Russia": "Moscow",
    "China": "Beijing", "Kenya": "Nairobi", "Portugal": "Lisbon", "Norway": "Oslo", "Ireland": "Dublin",
    "Peru": "Lima", "Greece": "Athens", "Poland": "Warsaw", "Sweden": "Stockholm", "Austria": "Vienna",
    "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Chile": "Santiago",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Hungary": "Budapest",
}
HELDOUT_COUNTRIES = ["Mexico", "Brazil", "Argentina", "Chile", "Thailand", "Vietnam", "Turkey", "Finland",
                     "Denmark", "Hungary"]
QUESTIONS = ["What is the capital of {country}?", "Which city is the capital of {country}?",
             "Tell me the capital of {country}.", "{country}'s capital?"]
PADDING = [
    "Great question! I am really glad you asked me about this, because geography is a fascinating subject.",
    "{capital} is a vibrant city with a long and rich history, many museums, and a lively cultural scene.",
    "Many visitors come to {capital} every year to enjoy its food, its architecture and its people.",
    "It is also an important centre of government, business and education for the whole of {country}.",
    "I hope this answer helps you! Please let me know if you have any other questions about {country}.",
]


def _long_answer(country, capital, rng):
    padding = [p.format(country=country, capital=capital) for p in PADDING]
    return " ".join([padding[0], f"The capital of {country} is {capital}.", *rng.sample(padding[1:], 4)])


def concise_answer_task(seed=0):
    """(preference lines, held-out prompts as message lists): 80 pairs over 20 countries, 10 held out."""
    rng = random.Random(seed)
    pairs = []
    for country, capital in CAPITALS.items():
        if country in HELDOUT_COUNTRIES:
            continue
        for question in QUESTIONS:
            prompt = [{"role": "user", "content": question.format(country=country)}]
            pairs.append({"input": {"messages": prompt},
                          "preferred_output": [{"role": "assistant",
                                                "content": f"The capital of {country} is {capital}."}],
                          "non_preferred_output": [{"role": "assistant",
                                                    "content": _long_answer(country, capital, rng)}]})
    rng.shuffle(pairs)
    heldout = [[{"role": "user", "content": QUESTIONS[i % 2].format(country=country)}]
               for i, country in enumerate(HELDOUT_COUNTRIES)]
    return pairs, heldout


def to_jsonl(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)
