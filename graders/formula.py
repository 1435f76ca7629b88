"""The `calculate_output` formula of a multi grader: parsed by a small recursive-descent parser, never
by eval().

    formula := sum
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | power
    power   := atom ("^" unary)?            right-associative: 2^3^2 = 2^9; -2^2 = -(2^2)
    atom    := number | key | function "(" sum ("," sum)* ")" | "(" sum ")"

Keys are the multi grader's `graders` keys; functions: min, max (any number of arguments), abs, floor,
ceil, exp, sqrt, log (natural), one argument each. Nothing else is a name: no attributes, no indexing,
no builtins.
"""

import math
import re

FUNCTIONS = {"min": (min, None), "max": (max, None), "abs": (abs, 1), "floor": (math.floor, 1),
             "ceil": (math.ceil, 1), "exp": (math.exp, 1), "sqrt": (math.sqrt, 1), "log": (math.log, 1)}
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\S))")


class FormulaError(Exception):
    """A formula that does not parse (`position` is the 0-based character where it fails), or that cannot
    be computed for these scores (position None)."""

    def __init__(self, message, position=None):
        super().__init__(message)
        self.position = position


def parse(text, keys):
    """The formula as a tree of tuples: ("num", x), ("key", name), ("neg", a), (op, a, b), ("call", f, [args])."""
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            break  # only trailing whitespace is left
        number, name, symbol = match.groups()
        start = match.start(match.lastindex)
        tokens.append(("num", float(number), start) if number is not None else
                      ("name", name, start) if name is not None else ("sym", symbol, start))
        position = match.end()
    tokens.append(("end", None, len(text.rstrip())))
    return _Parser(tokens, set(keys)).formula()


def evaluate(tree, scores):
    """The formula's value for these scores; FormulaError on division by zero, a math domain error, an
    overflow or a result that is not finite."""
    try:
        value = _evaluate(tree, scores)
    except ZeroDivisionError:
        raise FormulaError("division by zero") from None
    except (ValueError, OverflowError) as error:
        raise FormulaError(f"cannot compute: {error}") from None
    if not math.isfinite(value):
        raise FormulaError(f"the result is {value}")
    return float(value)


def names(tree):
    """The keys a formula reads."""
    if tree[0] == "key":
        return {tree[1]}
    if tree[0] == "num":
        return set()
    if tree[0] == "call":
        return set().union(*(names(arg) for arg in tree[2]))
    return set().union(*(names(arg) for arg in tree[1:]))


def _evaluate(tree, scores):
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "key":
        return scores[tree[1]]
    if kind == "neg":
        return -_evaluate(tree[1], scores)
    if kind == "call":
        function = FUNCTIONS[tree[1]][0]
        args = [_evaluate(arg, scores) for arg in tree[2]]
        return float(function(*args))
    a, b = _evaluate(tree[1], scores), _evaluate(tree[2], scores)
    if kind == "+":
        return a + b
    if kind == "-":
        return a - b
    if kind == "*":
        return a * b
    if kind == "/":
        return a / b
    result = math.pow(a, b)  # "^"; math.pow raises on a complex result, where ** would return one
    return result


class _Parser:
    def __init__(self, tokens, keys):
        self.tokens, self.keys, self.at = tokens, keys, 0

    def formula(self):
        if self.peek()[0] == "end":
            raise FormulaError("the formula is empty", 0)
        tree = self.sum()
        kind, value, position = self.peek()
        if kind != "end":
            raise FormulaError(f"unexpected {value!r} at position {position}", position)
        return tree

    def peek(self):
        return self.tokens[self.at]

    def take(self):
        token = self.tokens[self.at]
        self.at += 1
        return token

    def is_symbol(self, *symbols):
        kind, value, _ = self.peek()
        return kind == "sym" and value in symbols

    def sum(self):
        tree = self.product()
        while self.is_symbol("+", "-"):
            tree = (self.take()[1], tree, self.product())
        return tree

    def product(self):
        tree = self.unary()
        while self.is_symbol("*", "/"):
            tree = (self.take()[1], tree, self.unary())
        return tree

    def unary(self):
        if self.is_symbol("-"):
            self.take()
            return ("neg", self.unary())
        if self.is_symbol("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.is_symbol("^"):
            self.take()
            return ("^", base, self.unary())
        return base

    def atom(self):
        kind, value, position = self.take()
        if kind == "num":
            return ("num", value)
        if kind == "name":
            if self.is_symbol("("):
                return self.call(value, position)
            if value in FUNCTIONS:
                raise FormulaError(f"{value} at position {position} is a function: write {value}(…)", position)
            if value not in self.keys:
                known = ", ".join(sorted(self.keys)) or "none"
                raise FormulaError(f"{value!r} at position {position} is not one of the graders ({known})",
                                   position)
            return ("key", value)
        if kind == "sym" and value == "(":
            tree = self.sum()
            self.expect(")")
            return tree
        if kind == "end":
            raise FormulaError(f"the formula ends early at position {position}", position)
        raise FormulaError(f"unexpected {value!r} at position {position}", position)

    def call(self, name, position):
        if name not in FUNCTIONS:
            raise FormulaError(f"{name!r} at position {position} is not a function "
                               f"({', '.join(FUNCTIONS)})", position)
        self.take()  # "("
        args = [self.sum()]
        while self.is_symbol(","):
            self.take()
            args.append(self.sum())
        self.expect(")")
        arity = FUNCTIONS[name][1]
        if arity is not None and len(args) != arity:
            raise FormulaError(f"{name}() at position {position} takes {arity} argument, not {len(args)}",
                               position)
        return ("call", name, args)

    def expect(self, symbol):
        kind, value, position = self.take()
        if kind != "sym" or value != symbol:
            found = "the end" if kind == "end" else repr(value)
            raise FormulaError(f"expected {symbol!r} at position {position}, found {found}", position)
