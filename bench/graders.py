"""What a grader costs per item, over and above the grading itself: string_check, and python in its
sandbox process, each over 200 items through `grade_items` (the evals' batch call); and, for contrast,
python through `run_grader` one item at a time, which starts a sandbox process per item.

    python bench/graders.py [--items 200] [--rounds 5]

Each figure is the best of the rounds (on a shared machine the slowest rounds measure the neighbours),
in milliseconds per item. No assertion: it prints figures only.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from graders import grade_items, run_grader  # noqa: E402

STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}
PYTHON = {"type": "python", "name": "exact", "source": "def grade(sample, item):\n"
                                                      "    return float(sample['output_text'] == item['answer'])\n"}


def best_ms_per_item(grade, pairs, rounds):
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        results = grade(pairs)
        elapsed = time.perf_counter() - started
        assert all(result.error is None for result in results), results[0].messages
        best = min(best, elapsed / len(pairs))
    return best * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pairs = [(f"answer {i % 7}", {"answer": f"answer {i % 5}"}) for i in range(args.items)]
    few = pairs[:20]

    string_check = best_ms_per_item(lambda p: grade_items(STRING_CHECK, p), pairs, args.rounds)
    python_batch = best_ms_per_item(lambda p: grade_items(PYTHON, p), pairs, args.rounds)
    python_single = best_ms_per_item(lambda p: [run_grader(PYTHON, s, i) for s, i in p], few, args.rounds)
    print(f"string_check, {args.items} items via grade_items: {string_check:.3f} ms per item")
    print(f"python, {args.items} items via grade_items (one sandbox process): {python_batch:.3f} ms per item")
    print(f"python, {len(few)} items via run_grader (a sandbox process each): {python_single:.1f} ms per item")


if __name__ == "__main__":
    main()
