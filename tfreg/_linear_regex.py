"""Regular expressions searched in time linear in the text (Thompson's NFA).

Python's `re` backtracks: `(a+)+$` on "aaaa...b" takes time exponential in
the text. A pattern read from a file (an optimizer's saved `include`) must
not let the same file's layer names stall loading, so such patterns are
compiled here instead, into a program of at most `MAX_PROGRAM` instructions
simulated over all states at once: time O(len(text) * program size).

Accepted: literals, `.`, classes (`[a-z]`, `\\d`, `\\w`, `\\s` and their
negations), groups, `|`, the quantifiers `*`, `+`, `?`, `{m,n}` (greedy or
lazy: only whether the pattern occurs is asked) and the anchors `^`, `$`,
`\\A`, `\\Z`, `\\b`, `\\B`; at most `MAX_LENGTH` characters. Refused:
backreferences, lookarounds, conditionals, atomic groups, possessive
quantifiers and flags, which either need backtracking or change the
meaning of the rest.
"""

import re
try:
    from re import _constants as sre
    from re import _parser
except ImportError:  # Python 3.10: the same modules under their old names.
    import sre_constants as sre
    import sre_parse as _parser

MAX_LENGTH = 256
MAX_PROGRAM = 4096

ACCEPTED = (
    f"a regular expression of at most {MAX_LENGTH} characters made of "
    "literals, '.', classes, groups, '|', quantifiers and the anchors "
    "^ $ \\A \\Z \\b \\B (no backreferences, lookarounds, atomic groups, "
    "possessive quantifiers or flags)")

_CATEGORIES = {
    sre.CATEGORY_DIGIT: re.compile(r"\d"),
    sre.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    sre.CATEGORY_WORD: re.compile(r"\w"),
    sre.CATEGORY_NOT_WORD: re.compile(r"\W"),
    sre.CATEGORY_SPACE: re.compile(r"\s"),
    sre.CATEGORY_NOT_SPACE: re.compile(r"\S"),
}
_WORD = re.compile(r"\w")
_NAMES = {
    sre.GROUPREF: "a backreference",
    sre.GROUPREF_EXISTS: "a conditional",
    sre.ASSERT: "a lookaround",
    sre.ASSERT_NOT: "a lookaround",
}
# Python 3.11's additions; 3.10's parser rejects them itself.
if hasattr(sre, "ATOMIC_GROUP"):
    _NAMES[sre.ATOMIC_GROUP] = "an atomic group"
    _NAMES[sre.POSSESSIVE_REPEAT] = "a possessive quantifier"



class Refused(ValueError):
    """A pattern outside the accepted subset or size."""


def _is_word(text, position):
    return 0 <= position < len(text) and bool(_WORD.match(text[position]))


_ANCHORS = {
    sre.AT_BEGINNING: lambda text, i: i == 0,
    sre.AT_BEGINNING_STRING: lambda text, i: i == 0,
    sre.AT_END: lambda text, i: i == len(text) or (
        i == len(text) - 1 and text[i] == "\n"),
    sre.AT_END_STRING: lambda text, i: i == len(text),
    sre.AT_BOUNDARY: lambda text, i: (
        _is_word(text, i - 1) != _is_word(text, i)),
    sre.AT_NON_BOUNDARY: lambda text, i: (
        _is_word(text, i - 1) == _is_word(text, i)),
}


def _class_test(items):
    """A predicate on one character for the items of a `[...]` class."""
    negate = bool(items) and items[0][0] is sre.NEGATE
    tests = []
    for op, value in items[1:] if negate else items:
        if op is sre.LITERAL:
            tests.append(lambda ch, c=chr(value): ch == c)
        elif op is sre.RANGE:
            tests.append(lambda ch, lo=value[0], hi=value[1]: lo <= ord(ch) <= hi)
        elif op is sre.CATEGORY and value in _CATEGORIES:
            tests.append(lambda ch, c=_CATEGORIES[value]: bool(c.match(ch)))
        else:
            raise Refused(f"the class item {op} {value}")
    return lambda ch: any(test(ch) for test in tests) != negate


class _Compiler:
    """Emits the program: ("char", test), ("split", a, b), ("jump", a),
    ("assert", test), ("match",)."""

    def __init__(self):
        self.program = []

    def _emit(self, instruction):
        if len(self.program) >= MAX_PROGRAM:
            raise Refused(f"a program longer than {MAX_PROGRAM} instructions")
        self.program.append(instruction)
        return len(self.program) - 1

    def _patch(self, index, *targets):
        self.program[index] = (self.program[index][0],) + targets

    def sequence(self, items):
        for op, value in items:
            self.item(op, value)

    def item(self, op, value):
        if op is sre.LITERAL:
            self._emit(("char", lambda ch, c=chr(value): ch == c))
        elif op is sre.NOT_LITERAL:
            self._emit(("char", lambda ch, c=chr(value): ch != c))
        elif op is sre.ANY:
            self._emit(("char", lambda ch: ch != "\n"))
        elif op is sre.IN:
            self._emit(("char", _class_test(value)))
        elif op is sre.AT and value in _ANCHORS:
            self._emit(("assert", _ANCHORS[value]))
        elif op is sre.SUBPATTERN:
            _, add_flags, del_flags, pattern = value
            if add_flags or del_flags:
                raise Refused("inline flags")
            self.sequence(pattern)
        elif op is sre.BRANCH:
            self._branch(value[1])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            self._repeat(*value)
        else:
            raise Refused(_NAMES.get(op, str(op)))

    def _branch(self, alternatives):
        jumps = []
        for alternative in alternatives[:-1]:
            split = self._emit(("split",))
            self.sequence(alternative)
            jumps.append(self._emit(("jump",)))
            self._patch(split, split + 1, len(self.program))
        self.sequence(alternatives[-1])
        for jump in jumps:
            self._patch(jump, len(self.program))

    def _repeat(self, minimum, maximum, pattern):
        for _ in range(minimum):
            self.sequence(pattern)
        if maximum == sre.MAXREPEAT:
            split = self._emit(("split",))
            self.sequence(pattern)
            self._emit(("jump", split))
            self._patch(split, split + 1, len(self.program))
            return
        splits = []
        for _ in range(maximum - minimum):
            splits.append(self._emit(("split",)))
            self.sequence(pattern)
        for split in splits:
            self._patch(split, split + 1, len(self.program))


class Pattern:
    """A compiled pattern; `search(text)` says whether it occurs in text."""

    def __init__(self, program):
        self._program = program

    def _add(self, states, index, text, position):
        stack = [index]
        while stack:
            index = stack.pop()
            if index in states:
                continue
            states.add(index)
            kind, *targets = self._program[index]
            if kind == "jump":
                stack.append(targets[0])
            elif kind == "split":
                stack.extend(reversed(targets))
            elif kind == "assert" and targets[0](text, position):
                stack.append(index + 1)

    def search(self, text):
        states = set()
        for position in range(len(text) + 1):
            self._add(states, 0, text, position)
            if any(self._program[i][0] == "match" for i in states):
                return True
            if position == len(text):
                return False
            ch = text[position]
            following = set()
            for index in states:
                kind, *targets = self._program[index]
                if kind == "char" and targets[0](ch):
                    self._add(following, index + 1, text, position + 1)
            states = following
        return False


def compile(pattern):  # pylint: disable=redefined-builtin
    """`pattern` (a str valid for `re`) as a `Pattern`; raises `Refused`
    (a ValueError) outside the accepted subset or size."""
    if len(pattern) > MAX_LENGTH:
        raise Refused(f"{len(pattern)} characters")
    parsed = _parser.parse(pattern)
    if parsed.state.flags & ~sre.SRE_FLAG_UNICODE:
        raise Refused("flags")
    compiler = _Compiler()
    compiler.sequence(parsed)
    compiler._emit(("match",))  # pylint: disable=protected-access
    return Pattern(compiler.program)
