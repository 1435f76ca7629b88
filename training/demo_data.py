"""The demo data set: customer-support intent classification.

Each example is a chat: a fixed system prompt, a customer message, and the
intent label as the assistant's answer. The generator is deterministic (one
seeded `random.Random`), needs no download, and produces three disjoint sets:
training lines, validation lines, and held-out prompts for the playground.
Held-out prompts are built from wordings that the training and validation
sets never use (`HELDOUT_WORDINGS`), so exact match on them measures what a
model learned about each intent, not recall of its phrasings.
"""

import json
import random

# Short on purpose: the labels are what fine-tuning teaches, so the prompt does not list them (the base
# model cannot guess them), and a short prompt keeps each example ~50 tokens (it was ~106), so CPU training
# is quick. Each label is one word, so a model cannot answer with half of one label joined to half of
# another (`update_staff` for "transfer me to a member of your staff" was a typical miss of two-word labels).
SYSTEM_PROMPT = "Classify the customer's support request as one intent label."

INTENTS = {
    "cancel": [
        "please cancel my order {order}",
        "i want to cancel order {order} before it ships",
        "can you stop order {order}, i changed my mind",
        "cancel the {item} i ordered yesterday",
        "i no longer need the {item}, cancel it please",
        "how do i cancel order {order}",
        "i made an error with order {order}, cancel it",
        "please void order {order}",
        "please stop the {item} order before you send it",
    ],
    "tracking": [
        "where is my order {order}",
        "when will my {item} arrive",
        "can you track order {order} for me",
        "my {item} has not arrived yet, where is it",
        "what is the delivery status of order {order}",
        "has order {order} shipped",
        "is the {item} coming soon",
        "any update on when order {order} will be delivered",
        "i am waiting for order {order}, where is it now",
    ],
    "refund": [
        "i want my money back for the {item}",
        "please refund order {order}",
        "how do i get a refund for the {item}",
        "i returned the {item}, where is my refund",
        "refund me for order {order} please",
        "the {item} was not what i expected, i want a refund",
        "when do i get my money back for order {order}",
        "pay me back for the {item}",
        "i want a refund, the {item} went back to you last week",
    ],
    "address": [
        "i need to change the delivery address for order {order}",
        "please ship order {order} to {city} instead",
        "i moved to {city}, update my address",
        "can you send the {item} to my new address in {city}",
        "wrong address on order {order}, it should go to {city}",
        "update my shipping address to {city}",
        "send order {order} to a different address in {city}",
        "my address is now in {city}, please change it",
        "the {item} should be delivered to {city}, not my old home",
    ],
    "password": [
        "i forgot my password",
        "how do i reset my password",
        "i cannot log in, my password does not work",
        "send me a password reset link",
        "my account is locked after too many password attempts",
        "reset the password for my account please",
        "i lost my password",
        "my password is not accepted, i need to change it",
        "i cannot remember my password",
    ],
    "payment": [
        "i need to update my credit card",
        "my card expired, how do i add a new one",
        "change the payment method on my account",
        "please use my new {card} card for payments",
        "i want to pay with {card} instead",
        "remove my old card and add a {card} card",
        "switch my payment to my {card} card",
        "my card was replaced, update it on my account",
        "charge a different card for my orders",
    ],
    "damage": [
        "the {item} arrived broken",
        "my {item} was damaged in shipping",
        "order {order} came with a cracked {item}",
        "the box was crushed and the {item} is ruined",
        "i received a damaged {item} in order {order}",
        "the {item} does not work, it arrived smashed",
        "the {item} arrived with a big scratch",
        "order {order} arrived with a broken {item}",
        "the {item} is cracked and does not work",
    ],
    "product": [
        "is the {item} available in blue",
        "what size is the {item}",
        "does the {item} come with a warranty",
        "how long does the battery of the {item} last",
        "is the {item} compatible with my phone",
        "what material is the {item} made of",
        "how big is the {item}",
        "what does the {item} look like in red",
        "is the {item} waterproof",
    ],
    "account": [
        "please delete my account",
        "i want to close my account permanently",
        "how do i remove all my data and close my account",
        "cancel my membership and delete my profile",
        "i do not want an account anymore, close it",
        "deactivate my account please",
        "remove my account, i am done with this shop",
        "i want my account and my data gone",
        "end my account, i will not use it again",
    ],
    "human": [
        "let me talk to a real person",
        "i want to speak to an agent",
        "connect me with a human please",
        "can i call someone from support",
        "stop the bot, get me a human",
        "i need a person to help me, not a machine",
        "put me through to someone on your team",
        "i would like to talk to an agent",
        "can a real person help me instead of the bot",
    ],
}

# Other ways to ask for each intent; only the held-out prompts use them.
HELDOUT_WORDINGS = {
    "cancel": ["scrap order {order}, i do not want it anymore",
                     "i ordered the {item} by mistake, please call off the order"],
    "tracking": ["any news on the shipment of order {order}",
                    "i am still waiting for the {item}, is it on its way"],
    "refund": ["give me back what i paid for order {order}",
                       "i sent the {item} back and want the money returned"],
    "address": ["deliver order {order} to my office in {city} rather than my home",
                       "my address changed, the {item} should go to {city} now"],
    "password": ["the login page says my password is wrong, help me set a new one",
                       "i need a new password, the old one is gone from my memory"],
    "payment": ["my bank issued me a new card, switch my billing to it",
                       "charge my {card} card from now on, not the old one"],
    "damage": ["the {item} came in pieces",
                      "the {item} in order {order} was dented when i opened the box"],
    "product": ["can you tell me how heavy the {item} is",
                         "which colours does the {item} come in"],
    "account": ["erase my account and everything you store about me",
                      "i am leaving your shop for good, shut down my account"],
    "human": ["transfer me to a member of your staff",
                       "is there a live person i could chat with instead"],
}

ITEMS = ["lamp", "blender", "jacket", "headphones", "kettle", "backpack", "monitor",
         "chair", "camera", "toaster", "keyboard", "watch", "speaker", "mattress"]
CITIES = ["berlin", "lisbon", "denver", "osaka", "toronto", "dublin", "madrid",
          "austin", "oslo", "seoul"]
CARDS = ["visa", "mastercard", "amex", "debit", "paypal"]
OPENERS = ["", "hi, ", "hello, ", "hey, ", "good morning, ", "excuse me, "]
CLOSERS = ["", " thanks", " thank you", " asap", " please help", "!"]


def _fill(template, rng):
    return template.format(
        order=str(rng.randint(10000, 99999)),
        item=rng.choice(ITEMS),
        city=rng.choice(CITIES),
        card=rng.choice(CARDS),
    )


def _example(user_text, label):
    return {"messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_text},
        {"role": "assistant", "content": label},
    ]}


def make_demo_data(seed=0, n_train=400, n_valid=60, n_heldout=50):
    """Return (train, valid, heldout); heldout items are {"messages", "expected"}."""
    rng = random.Random(seed)
    labels = sorted(INTENTS)
    seen = set()

    def draw(wordings=INTENTS):
        while True:
            label = labels[rng.randrange(len(labels))]
            text = rng.choice(OPENERS) + _fill(rng.choice(wordings[label]), rng) + rng.choice(CLOSERS)
            if text not in seen:
                seen.add(text)
                return text, label

    train = [_example(*draw()) for _ in range(n_train)]
    valid = [_example(*draw()) for _ in range(n_valid)]
    heldout = []
    for _ in range(n_heldout):
        text, label = draw(HELDOUT_WORDINGS)
        heldout.append({"messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                     {"role": "user", "content": text}],
                        "expected": label})
    return train, valid, heldout


def corpus_texts(seed=0):
    """Every string the demo data can contain: what the demo tokenizer is built from."""
    train, valid, heldout = make_demo_data(seed)
    texts = [SYSTEM_PROMPT, *INTENTS.keys()]
    for row in train + valid:
        texts.extend(m["content"] for m in row["messages"])
    for row in heldout:
        texts.extend(m["content"] for m in row["messages"])
    return texts


def to_jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
