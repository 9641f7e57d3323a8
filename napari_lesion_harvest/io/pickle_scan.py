"""Bound what unpickling an untrusted pickle can cost, before any object is built.

:func:`scan_pickle` reads a pickle's opcodes once and replays them on a model of
the unpickler's stack and memo that keeps, for each object, two numbers: how
deep its containers nest, and its *expanded size*, the number of objects a walk
over it visits when every shared reference (memo ``GET``, ``DUP``) is counted
each time it occurs. No value is decoded and nothing is called. It refuses,
with a :class:`~.errors.FormatError` that names the file, the opcode, its byte
and the limit:

* unknown, malformed or truncated opcodes, opcodes that find too few objects
  (stack underflow, a memo index never stored), and the opcodes of
  :data:`REFUSED_OPCODES` (protocol 5's out-of-band buffers, protocol 4's sets);
* a memo store (``PUT``, ``BINPUT``, ``LONG_BINPUT``) at an index beyond the
  objects stored so far: CPython's unpickler grows its memo array to the index,
  so a 9-byte pickle could take a gigabyte;
* containers nested deeper than ``max_depth``: hashing a deeply nested tuple
  recurses in C and crashes the process;
* an object whose expanded size passes ``max_objects``: shared references let
  a small file stand for an exponentially larger tree, and whatever hashes,
  prints or walks the tree pays for all of it;
* a container or a global as a dict key, and an integer wider than 64 bits:
  hashing a container key costs its expanded size, and wide integers can be
  chosen to share one hash, which makes each dict insert search all the others;
* adding to a list or dict after it was placed inside another container. A
  pickler writes a container's items before it uses the container anywhere
  else, so only a self-containing (cyclic) structure does this; refusing it
  keeps the model's sizes exact and the result acyclic;
* ``BUILD`` on a global: it would set attributes of the callable itself, for
  every later pickle read by the same process.

An object that a call opcode (``REDUCE``, ``NEWOBJ``, ``INST``, ``OBJ``, ...)
makes counts as one object that holds nothing, and ``BUILD`` state is not
counted as kept: the caller must resolve globals only to callables whose
results keep none of their arguments and state as objects.

After a scan passes, the unpickler's work is proportional to the file size and
every object it returns expands to at most ``max_objects`` objects. Memory stays
proportional to the file size too: the scan needs at most about 25 bytes per
byte of pickle, CPython's unpickler up to about 90 (a file of empty dicts).
"""

from __future__ import annotations

import io
import pickletools

from napari_lesion_harvest.io.errors import FormatError

#: Opcodes refused outright, as is any opcode this module has no rule for:
#: protocol 5's out-of-band buffers, and protocol 4's sets (no annotation layout
#: holds one, and an empty set costs CPython 216 bytes of memory per byte of pickle).
REFUSED_OPCODES = frozenset(
    {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER", "EMPTY_SET", "ADDITEMS", "FROZENSET"}
)

#: An object that holds no others (number, text, bytes, a call's result): nesting
#: depth 0, expanded size 1. Tuples are ``(depth, size)`` tuples too; lists and
#: dicts are ``[depth, size, closed]`` lists, where ``closed`` turns true once the
#: container is placed inside another one.
_LEAF = (0, 1)
#: A global (``GLOBAL``, ``STACK_GLOBAL``, ``EXT*``): holds nothing either, but
#: ``BUILD`` may not set its state (that would change the callable for every later
#: pickle), and it is no dict key.
_GLOBAL = (0, 1, "global")  # unequal to _LEAF, so never the same constant
#: A new empty list or dict that nothing else refers to yet: one shared
#: record, so that a file of empty containers costs the scan no more memory than
#: it costs the unpickler. It gets its own ``[1, 1, False]`` record when it is
#: stored in the memo, duplicated, or given items.
_EMPTY = (1, 1, "empty")
_PAIR_OF_LEAVES = (1, 3)
_WIDEST_INTEGER_BITS = 64
_LEAF_OPCODES = frozenset(
    {
        "BININT", "BININT1", "BININT2", "STRING", "BINSTRING", "SHORT_BINSTRING",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "NONE", "NEWTRUE", "NEWFALSE",
        "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT",
        "PERSID",
    }
)  # fmt: skip
_GLOBAL_OPCODES = frozenset({"GLOBAL", "EXT1", "EXT2", "EXT4"})
#: Call opcodes and how many objects each takes from the stack.
_CALL_OPCODES = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "BINPERSID": 1}


class _Refusal(Exception):
    """Why the opcode being scanned is refused, as a predicate ("is not supported")."""


def scan_pickle(data: bytes, path: str, *, max_depth: int, max_objects: int) -> None:
    """Refuse ``data`` unless unpickling it is bounded (see the module docstring).

    Parameters
    ----------
    data : bytes
        The whole pickle.
    path : str
        The file name used in error messages.
    max_depth : int
        Deepest container nesting allowed (a list of numbers is 1 deep).
    max_objects : int
        Largest expanded size (objects, shared ones counted each time they
        occur) allowed for any object.

    Raises
    ------
    FormatError
        At the first opcode (in file order) that breaks a rule, naming its byte.
    """
    scan = _Scan(data, max_depth=max_depth, max_objects=max_objects)
    try:
        scan.replay()
    except _Refusal as refusal:
        name = scan.handlers[data[scan.start]][0]
        raise FormatError(path, f"pickle opcode {name} at byte {scan.start:,} {refusal}") from None
    except (IndexError, ValueError) as error:
        if scan.start >= len(data):
            reason = "it ends before its STOP opcode"
        elif isinstance(error, IndexError):
            name = scan.handlers[data[scan.start]][0]
            reason = (
                f"opcode {name} at byte {scan.start:,} is cut short or finds too few "
                "objects on the stack or in the memo"
            )
        else:
            reason = f"{error} (at byte {scan.start:,})"
        raise FormatError(path, f"not a readable pickle: {reason}") from None


class _Scan:
    """The opcode replay over a stack and memo of ``(depth, size)`` records."""

    def __init__(self, data: bytes, *, max_depth: int, max_objects: int):
        self.data = data
        self.max_depth = max_depth
        self.max_objects = max_objects
        self.stack: list = []
        self.marks: list[int] = []  # stack lengths at the open MARKs
        self.memo: list = []
        self.start = 0  # byte where the opcode being replayed begins
        self.stopped = False
        #: opcode byte -> (name, argument reader or None, replay function of the argument)
        self.handlers = {}
        for opcode in pickletools.opcodes:
            handler = self._handler(opcode.name)
            reader = opcode.arg.reader if opcode.arg and handler != self._refuse else None
            self.handlers[opcode.code.encode("latin1")[0]] = (opcode.name, reader, handler)

    def replay(self) -> None:
        """Replay opcodes up to STOP; on an error :attr:`start` is the opcode's byte.

        The paper's files are 95% memo stores and gets, REDUCE, TUPLE2 and
        BINUNICODE, so those are replayed inline first; :attr:`handlers` has
        every opcode, these included.
        """
        data, stack, memo, handlers = self.data, self.stack, self.memo, self.handlers
        stream = io.BytesIO(data)
        end = len(data)
        pairs_fit = self.max_depth >= 1 and self.max_objects >= _PAIR_OF_LEAVES[1]
        from_bytes = int.from_bytes
        position = 0
        try:
            while position < end:
                code = data[position]
                if code == 0x72:  # LONG_BINPUT
                    index = from_bytes(data[position + 1 : position + 5], "little")
                    if index < len(memo) and stack[-1] is not _EMPTY:
                        memo[index] = stack[-1]
                    else:
                        self._put(index)
                    position += 5
                elif code == 0x68:  # BINGET
                    stack.append(memo[data[position + 1]])
                    position += 2
                elif code == 0x52:  # REDUCE
                    del stack[-1]
                    stack[-1] = _LEAF
                    position += 1
                elif code == 0x86 and stack[-1] is _LEAF and stack[-2] is _LEAF and pairs_fit:
                    del stack[-1]  # TUPLE2 of two leaves
                    stack[-1] = _PAIR_OF_LEAVES
                    position += 1
                elif code == 0x58:  # BINUNICODE
                    stack.append(_LEAF)
                    position += 5 + from_bytes(data[position + 1 : position + 5], "little")
                else:
                    try:
                        _name, reader, handler = handlers[code]
                    except KeyError:
                        raise ValueError(f"unknown opcode {code:#04x}") from None
                    if reader is None:
                        handler(None)
                        position += 1
                    else:
                        stream.seek(position + 1)
                        handler(reader(stream))
                        position = stream.tell()
                    if self.stopped:
                        return
        except Exception:
            self.start = position
            raise
        self.start = position  # the bytes ran out before STOP
        raise IndexError

    # ----------------------------------------------------------------- opcodes

    def _handler(self, name: str):
        """The function that replays opcode ``name``, given its argument."""
        if name in _LEAF_OPCODES:
            return lambda _: self.stack.append(_LEAF)
        if name in _GLOBAL_OPCODES:
            return lambda _: self.stack.append(_GLOBAL)
        if name in _CALL_OPCODES:
            return lambda _, count=_CALL_OPCODES[name]: self._call(count)
        return {
            "INT": self._integer,
            "LONG": self._integer,
            "LONG1": self._integer,
            "LONG4": self._integer,
            "INST": lambda _: self._call_marked(),
            "OBJ": lambda _: self._call_marked(),
            "STACK_GLOBAL": lambda _: self._call(2, result=_GLOBAL),
            "BUILD": lambda _: self._build(),
            "EMPTY_LIST": lambda _: self.stack.append(_EMPTY),
            "EMPTY_DICT": lambda _: self.stack.append(_EMPTY),
            "EMPTY_TUPLE": lambda _: self.stack.append((1, 1)),
            "TUPLE1": lambda _: self._tuple(1),
            "TUPLE2": lambda _: self._tuple(2),
            "TUPLE3": lambda _: self._tuple(3),
            "TUPLE": lambda _: self.stack.append(self._new(self._pop_mark())),
            "LIST": lambda _: self.stack.append([*self._new(self._pop_mark()), False]),
            "DICT": lambda _: self.stack.append([*self._new(self._pop_mark(), pairs=True), False]),
            "APPEND": lambda _: self._add([self.stack.pop()]),
            "APPENDS": lambda _: self._add(self._pop_mark()),
            "SETITEM": lambda _: self._add([self.stack.pop(-2), self.stack.pop()], pairs=True),
            "SETITEMS": lambda _: self._add(self._pop_mark(), pairs=True),
            "POP": lambda _: self._pop(),
            "POP_MARK": lambda _: self._pop_mark(),
            "DUP": lambda _: self.stack.append(self._top()),
            "MARK": lambda _: self.marks.append(len(self.stack)),
            "PUT": self._put,
            "BINPUT": self._put,
            "LONG_BINPUT": self._put,
            "MEMOIZE": lambda _: self._put(len(self.memo)),
            "GET": self._get,
            "BINGET": self._get,
            "LONG_BINGET": self._get,
            "PROTO": lambda _: None,
            "FRAME": lambda _: None,
            "STOP": lambda _: self._stop(),
        }.get(name, self._refuse)  # REFUSED_OPCODES have no rule

    def _refuse(self, _argument) -> None:
        """An opcode of :data:`REFUSED_OPCODES`, or one this module has no rule for."""
        raise _Refusal("is not supported")

    def _integer(self, value: int) -> None:
        if value.bit_length() > _WIDEST_INTEGER_BITS:
            raise _Refusal(f"holds an integer wider than {_WIDEST_INTEGER_BITS} bits")
        self.stack.append(_LEAF)

    def _call(self, count: int, *, result: tuple[int, int] = _LEAF) -> None:
        """A call opcode: ``count`` objects in, one object that holds nothing out."""
        if len(self.stack) < count:
            raise IndexError
        del self.stack[len(self.stack) - count + 1 :]
        self.stack[-1] = result

    def _build(self) -> None:
        """BUILD: the state goes into the object below it and is not kept as objects."""
        if self.stack[-2] is _GLOBAL:
            raise _Refusal("sets the state of a global")
        self.stack.pop()

    def _call_marked(self) -> None:
        self._pop_mark()
        self.stack.append(_LEAF)

    def _pop_mark(self) -> list:
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    def _pop(self) -> None:
        """POP drops the top object, or the last MARK when nothing was pushed after it
        (as CPython's unpickler does)."""
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()
        else:
            self.stack.pop()

    def _tuple(self, count: int) -> None:
        if len(self.stack) < count:
            raise IndexError
        items = self.stack[-count:]
        del self.stack[-count:]
        self.stack.append(self._new(items))

    def _put(self, index: int) -> None:
        if not 0 <= index <= len(self.memo):
            raise _Refusal(
                f"stores memo index {index:,}, beyond the {len(self.memo):,} objects stored so far"
            )
        if index == len(self.memo):
            self.memo.append(self._top())
        else:
            self.memo[index] = self._top()

    def _get(self, index: int) -> None:
        if not 0 <= index < len(self.memo):
            raise _Refusal(f"reads memo index {index:,}, which was never stored")
        self.stack.append(self.memo[index])

    def _top(self):
        """The top of the stack, given its own record if it is a shared :data:`_EMPTY`."""
        if self.stack[-1] is _EMPTY:
            self.stack[-1] = [1, 1, False]
        return self.stack[-1]

    def _stop(self) -> None:
        self.stack.pop()
        self.stopped = True

    # ----------------------------------------------------------------- containers

    def _new(self, items: list, *, pairs: bool = False) -> tuple[int, int]:
        """``(depth, size)`` of a new container holding ``items`` (``pairs``: of a dict)."""
        depth, size = self._contents(items, pairs=pairs)
        return self._checked(max(depth, 1), size + 1)

    def _add(self, items: list, *, pairs: bool = False) -> None:
        """Add ``items`` (``pairs``: keys and values) to the list or dict on top of the stack."""
        target = self._top()
        depth, size = self._contents(items, pairs=pairs)  # closes the items first
        if target.__class__ is not list:
            raise _Refusal("adds items to an object that is not a list or dict")
        if target[2]:
            raise _Refusal("adds items to a container already placed inside another one")
        target[0], target[1] = self._checked(max(depth, target[0]), size + target[1])

    def _contents(self, items: list, *, pairs: bool) -> tuple[int, int]:
        """Depth of a container of ``items`` and their total expanded size.

        Closes the lists and dicts among ``items``. With ``pairs``, every other
        item from the first is a dict key and must hold nothing.
        """
        if pairs and any(key is not _LEAF for key in items[::2]):
            raise _Refusal("uses a container or a global as a dict key (only plain values can be)")
        depth = size = 0
        for item in items:
            if item.__class__ is list:
                item[2] = True
            depth = max(depth, item[0] + 1)
            size += item[1]
        return depth, size

    def _checked(self, depth: int, size: int) -> tuple[int, int]:
        if depth > self.max_depth:
            raise _Refusal(f"nests containers deeper than the limit of {self.max_depth} levels")
        if size > self.max_objects:
            raise _Refusal(
                "makes an object that shared references expand to more than "
                f"{self.max_objects:,} objects, the limit for a file of this size"
            )
        return depth, size
