"""The one exception the engine raises for a source it cannot analyze, and how to word it."""

from __future__ import annotations

import enum
import re

#: Longest excerpt of someone else's error message quoted in ours.
QUOTE_LIMIT = 300

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KERAS_WRAPPER = re.compile(
    r"Exception encountered when calling (?:layer )?'?(?P<layer>[\w.]+?)'?(?:\.call\(\))?"
    r"(?: \(type \w+\))?\.\s*"
    r"(?:\x1b\[1m)?(?P<inner>.*?)(?:\x1b\[0m|\n\s*\nArguments received by|\Z)", re.DOTALL)
_TF_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}"),  # "{{function_node __inference_traced_42}}"
    re.compile(r"\[\[\{\{node [^}]*\}\}\]\]"),  # "[[{{node dense/MatMul}}]]"
    re.compile(r"\[Op:[^\]]*\]"),  # "[Op:__inference_traced_42]"
    re.compile(r" for '\{\{node [^']*'"),  # " for '{{node r/Reshape}} = Reshape[T=DT_FLOAT](…)'"
    re.compile(r"\.? and with input tensors computed as partial shapes:.*"),
)


class ErrorKind(str, enum.Enum):
    """Why a source could not be analyzed: the ``error.type`` of every report format.

    A public contract (JSON ``error.type``, JUnit, SARIF, the README's list): members are added,
    never renamed.  Code compares members, never message text.
    """

    # the path
    MISSING = "missing"  #: no such file, module or function
    NOT_A_FILE = "not-a-file"  #: a directory, pipe, device or socket where a model file goes
    EMPTY = "empty"  #: a 0-byte file
    UNREADABLE = "unreadable"  #: no permission to read it
    UNSUPPORTED = "unsupported"  #: not .keras, .h5 or a factory
    OPTION_LIKE = "option-like"  #: a source named like an option (``-…``)
    # the file's bytes
    CORRUPT = "corrupt"  #: damaged, crafted or not a Keras model file
    TRUNCATED = "truncated"  #: ends early (an interrupted save or download)
    WEIGHTS_ONLY = "weights-only"  #: weights but no architecture
    ZIP_BOMB = "zip-bomb"  #: a member that inflates far beyond its stored size
    TOO_LARGE = "too-large"  #: over the memory budget, or a config over its cap
    # what the file names
    CUSTOM_OBJECT = "custom-object"  #: a class nobody registered
    KERAS_VERSION = "keras-version"  #: a class the installed Keras does not have
    MISSING_PACKAGE = "missing-package"  #: a class from a package that is not installed
    UNSAFE_LAMBDA = "unsafe-lambda"  #: Lambda bytecode under safe mode
    UNSAFE_CONTENT = "unsafe-content"  #: safe mode refused something else (TFSMLayer, files)
    ARCHITECTURE_MISMATCH = "architecture-mismatch"  #: the rebuilt model does not fit the weights
    LOAD_FAILED = "load-failed"  #: Keras refused the file for another reason
    # the process
    OUT_OF_MEMORY = "out-of-memory"
    TIMEOUT = "timeout"  #: over ``--timeout``
    CRASHED = "crashed"  #: the worker died (a signal, ``os._exit``)
    EXITED = "exited"  #: ``sys.exit`` from the source's code
    INTERRUPTED = "interrupted"  #: ``KeyboardInterrupt`` from the source's code
    # the user's code
    IMPORT_FAILED = "import-failed"
    FACTORY_FAILED = "factory-failed"
    NOT_A_MODEL = "not-a-model"  #: a factory returned something gradcheck cannot judge
    NOT_CALLABLE = "not-callable"
    # the step
    NO_SIGNATURE = "no-signature"  #: no input spec and no ``--input``
    BAD_INPUT = "bad-input"  #: an ``--input`` that does not parse or fit
    FORWARD_FAILED = "forward-failed"
    LOSS_FAILED = "loss-failed"
    BAD_LOSS = "bad-loss"  #: ``--loss`` is wrong, or the loss is no float scalar
    BAD_DATA = "bad-data"  #: ``--data`` is wrong
    NO_BATCH = "no-batch"  #: nothing to build a training step's batch from
    TRAIN_STEP_FAILED = "train-step-failed"
    MISSING_OPTIMIZER = "missing-optimizer"  #: the step uses an optimizer the model lacks
    GRAPH_DIR = "graph-dir"  #: ``--graph`` cannot be written
    INTERNAL = "internal"  #: a bug of gradcheck's


class SourceProblem(Exception):
    """A problem with one source that the user can fix; becomes a ``SourceError`` in the report.

    ``kind`` is its ``ErrorKind``; the message is one sentence that names the problem and the
    remedy, kept on one line: the CLI prints one line per failed source.
    """

    def __init__(self, kind: ErrorKind, message: str):
        message = " ".join(printable(message).split(" "))  # names from a file stay escaped
        message = " ".join(message.split())
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message


def describe_exception(exc: BaseException) -> str:
    """One line for an exception raised by user code, Keras or TensorFlow: ``Type: message``.

    Keras wraps a layer's error in "Exception encountered when calling X.call()" plus a dump of
    the arguments, and TensorFlow decorates runtime errors with function and node names; both
    bury the sentence that says what went wrong, so only that sentence is kept, with the layer
    class Keras names.
    """
    text = exc.message if hasattr(exc, "message") and isinstance(exc.message, str) else str(exc)
    layer = None
    match = _KERAS_WRAPPER.search(text)
    while match:  # nested layers wrap each other; the innermost names the culprit
        layer, text = match.group("layer"), match.group("inner")
        match = _KERAS_WRAPPER.search(text)
    text = _ANSI.sub("", text)
    for noise in _TF_NOISE:
        text = noise.sub("", text)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) > QUOTE_LIMIT:
        line = line[:QUOTE_LIMIT - 1].rstrip() + "…"
    where = f" in {layer}" if layer else ""
    return f"{type(exc).__name__}{where}: {line}" if line else f"{type(exc).__name__}{where}"


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or TensorFlow's OOM (ResourceExhaustedError), anywhere in the chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
            return True
        if "OOM when allocating" in str(exc) or "bad_alloc" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every non-printable character written as an escape (``\\n``, ``\\x1b``).

    Control, format (bidi overrides), separator, surrogate and unassigned characters are what
    ``str.isprintable`` refuses; they are shown as Python writes them, so nothing a name holds
    can move the cursor, break a line, or fail to encode.  Printable text is returned unchanged.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
