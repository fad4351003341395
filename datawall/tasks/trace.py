"""Program tracing: the final value of a variable after a short program in a tiny Python subset.

The language: integer variables, assignments of one binary operation (+ - * // %) over variables and small
constants, `if`/`else` on one comparison, and `for i in range(K):` loops with a constant K (no nesting of
loops). Every generated program is valid Python with Python's semantics; the generator keeps every value
in 0..max_value and never divides by zero. Ground truth comes from the interpreter below (never exec/eval).

Prompt: the program, then `print(x)` and a newline. Solution: one line per executed statement: `x=V` for an
assignment, `i=K` for each loop iteration, `cond:True` or `cond:False` for an `if`; then the answer::

    a=5                 a=5
    b=a*3               b=15
    for i in range(2):  i=0
      a=a+i             a=5
    if a>b:             i=1
      b=b-a             a=6
    print(b)            a>b:False
                        #### 15
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass

from pydantic import Field

from datawall.errors import DatawallError
from datawall.tasks.base import ANSWER_PREFIX, GeneratedTask, Problem, TaskSettings

VARIABLES = "abcdefgh"
LOOP_VAR = "i"
INDENT = "  "
MAX_ABS = 10**12  # values beyond this end a run (a parsed program could otherwise grow without bound)
MAX_STEPS = 10_000
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}
_CMPOPS = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_ALPHABET = "".join(sorted(set("0123456789" + VARIABLES + LOOP_VAR + "forinrangeifelseprintTrueFalse"
                               + "()=:+-*/%<>! \n#")))


class TraceError(DatawallError):
    """A program outside the language, or a run that fails (undefined name, division by zero, limits)."""


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Assign:
    target: str
    expr: Expr


@dataclass(frozen=True)
class If:
    cond: Compare
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class For:
    var: str
    count: int
    body: tuple[Stmt, ...]


Expr = Var | Const | BinOp
Stmt = Assign | If | For


def render_expr(e: Expr | Compare) -> str:
    """Source text of an expression; nested operations get parentheses."""
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        return str(e.value)
    left, right = (f"({render_expr(x)})" if isinstance(x, BinOp) else render_expr(x) for x in (e.left, e.right))
    return f"{left}{e.op}{right}"


def render(program: tuple[Stmt, ...] | list[Stmt], depth: int = 0) -> str:
    """Source text of a program, one statement per line, two spaces per indentation level."""
    lines = []
    pad = INDENT * depth
    for s in program:
        if isinstance(s, Assign):
            lines.append(f"{pad}{s.target}={render_expr(s.expr)}")
        elif isinstance(s, If):
            lines += [f"{pad}if {render_expr(s.cond)}:", render(s.body, depth + 1)]
            if s.orelse:
                lines += [f"{pad}else:", render(s.orelse, depth + 1)]
        else:
            lines += [f"{pad}for {s.var} in range({s.count}):", render(s.body, depth + 1)]
    return "\n".join(lines)


def _value(e: Expr, env: dict[str, int]) -> int:
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        if e.name not in env:
            raise TraceError(f"name {e.name!r} is used before it is assigned")
        return env[e.name]
    x, y = _value(e.left, env), _value(e.right, env)
    if e.op == "+":
        return x + y
    if e.op == "-":
        return x - y
    if e.op == "*":
        return x * y
    if y == 0:
        raise TraceError(f"division by zero in {render_expr(e)}")
    return x // y if e.op == "//" else x % y  # Python's semantics: // floors, % takes the divisor's sign


def _truth(c: Compare, env: dict[str, int]) -> bool:
    x, y = _value(c.left, env), _value(c.right, env)
    return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y, "==": x == y, "!=": x != y}[c.op]


def execute(program: tuple[Stmt, ...] | list[Stmt], env: dict[str, int], trace: list[str],
            max_value: int | None = None) -> None:
    """Run statements, updating env and appending one trace line per executed statement.

    With max_value, any value outside 0..max_value is an error (the generator uses this to stay small).
    """
    for s in program:
        if len(trace) >= MAX_STEPS:
            raise TraceError(f"program runs more than {MAX_STEPS} steps")
        if isinstance(s, Assign):
            v = _value(s.expr, env)
            if abs(v) > MAX_ABS or (max_value is not None and not 0 <= v <= max_value):
                raise TraceError(f"{s.target}={v} is out of range")
            env[s.target] = v
            trace.append(f"{s.target}={v}")
        elif isinstance(s, If):
            ok = _truth(s.cond, env)
            trace.append(f"{render_expr(s.cond)}:{ok}")
            execute(s.body if ok else s.orelse, env, trace, max_value)
        else:
            for k in range(s.count):
                env[s.var] = k
                trace.append(f"{s.var}={k}")
                execute(s.body, env, trace, max_value)


def run(program: tuple[Stmt, ...] | list[Stmt], max_value: int | None = None) -> tuple[dict[str, int], list[str]]:
    """Final variables and trace lines of a program started with no variables."""
    env: dict[str, int] = {}
    trace: list[str] = []
    execute(program, env, trace, max_value)
    return env, trace


def _parse_expr(node: ast.expr) -> Expr:
    if isinstance(node, ast.Name):
        return Var(node.id)
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        return Const(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return BinOp(_BINOPS[type(node.op)], _parse_expr(node.left), _parse_expr(node.right))
    raise TraceError(f"line {getattr(node, 'lineno', '?')}: expression {ast.unparse(node)!r} is not allowed")


def _parse_block(nodes: list[ast.stmt]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for n in nodes:
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            out.append(Assign(n.targets[0].id, _parse_expr(n.value)))
        elif isinstance(n, ast.If) and isinstance(n.test, ast.Compare) and len(n.test.ops) == 1 \
                and type(n.test.ops[0]) in _CMPOPS:
            cond = Compare(_CMPOPS[type(n.test.ops[0])], _parse_expr(n.test.left),
                           _parse_expr(n.test.comparators[0]))
            out.append(If(cond, _parse_block(n.body), _parse_block(n.orelse)))
        elif (isinstance(n, ast.For) and isinstance(n.target, ast.Name) and not n.orelse
              and isinstance(n.iter, ast.Call) and isinstance(n.iter.func, ast.Name) and n.iter.func.id == "range"
              and len(n.iter.args) == 1 and not n.iter.keywords and isinstance(n.iter.args[0], ast.Constant)
              and type(n.iter.args[0].value) is int and 0 <= n.iter.args[0].value <= 1000):
            out.append(For(n.target.id, n.iter.args[0].value, _parse_block(n.body)))
        else:
            raise TraceError(f"line {n.lineno}: statement {ast.unparse(n).splitlines()[0]!r} is not allowed")
    return tuple(out)


def parse_program(text: str) -> tuple[tuple[Stmt, ...], str | None]:
    """Parse program text (optionally ending in `print(x)`) into statements and the printed name."""
    if len(text) > 20_000:
        raise TraceError(f"program is {len(text)} characters long (limit 20000)")
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise TraceError(f"not a program: {getattr(e, 'msg', e)}") from None
    question = None
    last = body[-1] if body else None
    if (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name)
            and last.value.func.id == "print" and len(last.value.args) == 1 and not last.value.keywords
            and isinstance(last.value.args[0], ast.Name)):
        question, body = last.value.args[0].id, body[:-1]
    return _parse_block(body), question


def _assigned(stmt: Stmt) -> set[str]:
    if isinstance(stmt, Assign):
        return {stmt.target}
    if isinstance(stmt, If):
        return set().union(*map(_assigned, stmt.body + stmt.orelse))
    return set().union(*map(_assigned, stmt.body)) - {stmt.var}


def _computed(program: list[Stmt]) -> list[str]:
    """Variables whose last top-level writer computes something (asking for a constant is no question)."""
    last: dict[str, Stmt] = {}
    for stmt in program:
        for name in _assigned(stmt):
            last[name] = stmt
    return sorted(n for n, st in last.items() if not (isinstance(st, Assign) and isinstance(st.expr, Const)))


class TraceSettings(TaskSettings):
    """Settings of the `trace` task."""

    statements: int = Field(4, ge=1, le=24, description="top-level statements per program (difficulty)")
    variables: int = Field(3, ge=1, le=len(VARIABLES), description="distinct variable names")
    loop_bound: int = Field(3, ge=0, le=9, description="most loop iterations; below 2 means no loops")
    max_value: int = Field(99, ge=9, le=9999, description="every value stays within 0..max_value")


class TraceTask(GeneratedTask):
    """Trace a short program and give the final value of a variable."""

    name = "trace"
    summary = "trace a short Python-subset program (assignments, if, for-range) and give a variable's value"
    Settings = TraceSettings

    def _generate(self, rng: random.Random) -> Problem:
        s = self.settings
        env: dict[str, int] = {}
        program = [self._statement(rng, env, "top") for _ in range(s.statements)]
        question = rng.choice([n for n in _computed(program) if n in env] or sorted(k for k in env if k != LOOP_VAR))
        env_check, trace = run(program, s.max_value)
        assert env_check == env
        text = render(program)
        key = f"{text}\nprint({question})"
        meta = {"program": text, "question": question, "trace": trace}
        return Problem(prompt=key + "\n", answer=str(env[question]), meta=meta, key=key)

    def _statement(self, rng: random.Random, env: dict[str, int], where: str) -> Stmt:
        """A random statement that runs within the limits from `env`, which it then updates.

        `where` is 'top', 'loop' (a for body: no loops), 'if' or 'loop-if' (an if body: assignments only).
        """
        top = where == "top"
        for _ in range(30):
            stmt = self._candidate(rng, env, where)
            trial = dict(env)
            try:
                execute([stmt], trial, [], self.settings.max_value)
            except TraceError:
                continue
            env.update(trial)
            return stmt
        # Always valid: assigning a small constant.
        target = rng.choice(self._targets(env, top))
        stmt = Assign(target, Const(rng.randint(0, min(9, self.settings.max_value))))
        env[target] = stmt.expr.value
        return stmt

    def _targets(self, env: dict[str, int], top: bool) -> list[str]:
        defined = sorted(k for k in env if k != LOOP_VAR)
        fresh = [v for v in VARIABLES[: self.settings.variables] if v not in env]
        if top and fresh and (not defined or len(defined) < 2):
            return fresh[:1]
        return defined + (fresh[:1] if top else [])

    def _candidate(self, rng: random.Random, env: dict[str, int], where: str) -> Stmt:
        s = self.settings
        top, in_loop = where == "top", where.startswith("loop")
        weights = [6, 2 if where in ("top", "loop") else 0, 2 if top and s.loop_bound >= 2 else 0]
        kind = rng.choices(["assign", "if", "for"], weights=weights)[0]
        names = sorted(k for k in env if k != LOOP_VAR or in_loop)  # the loop variable only inside its loop
        if not names or kind == "assign":
            target = rng.choice(self._targets(env, top))
            if target not in env and (not names or rng.random() < 0.5):
                return Assign(target, Const(rng.randint(0, min(20, s.max_value))))
            return Assign(target, self._expr(rng, names, target))
        if kind == "if":
            left = rng.choice(names)
            cond = Compare(rng.choice(list(_CMPOPS.values())), Var(left), self._operand(rng, names, avoid=left))
            inner = "loop-if" if in_loop else "if"
            then_env, else_env = dict(env), dict(env)
            body = tuple(self._statement(rng, then_env, inner) for _ in range(rng.randint(1, 2)))
            orelse = tuple(self._statement(rng, else_env, inner) for _ in range(rng.randint(0, 1)))
            return If(cond, body, orelse)
        loop_env = dict(env, **{LOOP_VAR: 0})
        body = tuple(self._statement(rng, loop_env, "loop") for _ in range(rng.randint(1, 2)))
        return For(LOOP_VAR, rng.randint(2, s.loop_bound), body)

    def _operand(self, rng: random.Random, names: list[str], small: int = 1, avoid: str = "") -> Expr:
        """A variable (not `avoid`: 'a-a' and 'a<a' say nothing) or a constant small..9."""
        others = [n for n in names if n != avoid]
        if others and rng.random() < 0.5:
            return Var(rng.choice(others))
        return Const(rng.randint(small, min(9, self.settings.max_value)))

    def _expr(self, rng: random.Random, names: list[str], target: str) -> Expr:
        op = rng.choices(["+", "-", "*", "//", "%", ""], weights=[4, 3, 3, 1, 1, 1])[0]
        if not op:
            return self._operand(rng, names, small=0, avoid=target)
        left = rng.choice(names)
        avoid = left if op in ("-", "//", "%") else ""
        return BinOp(op, Var(left), self._operand(rng, names, small=2 if op in ("//", "%") else 1, avoid=avoid))

    def solution(self, problem: Problem) -> str:
        return "\n".join([*problem.meta["trace"], ANSWER_PREFIX + problem.answer])

    @property
    def alphabet(self) -> str:
        return _ALPHABET

    def describe(self) -> str:
        s = self.settings
        loops = f"for-loops up to {s.loop_bound} iterations" if s.loop_bound >= 2 else "no loops"
        return (f"trace [{s.as_text()}]: final value of a variable after {s.statements} statements over "
                f"{s.variables} variables, {loops}, values 0..{s.max_value}")
