"""A form derived from a pydantic model: one row per field, in the model's order.

The Utilities screen builds every utility's Selections and Options tabs with it, so a new
utility's options appear without a screen change. `field_specs(model)` reads the model
(title, description, type, limits, `json_schema_extra={"choices": name}`); `ModelForm` shows
the fields (str: Input, bool: Checkbox, Literal/enum or a choices name: Select, list[str]
with choices: a multi-pick, date: Input MM/DD/YYYY, numbers: Input that takes only
numbers) and reads them back as plain values for the service to validate. Every label and
choice is shown as text, never markup.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, SelectionList, Static
from textual.widgets.selection_list import Selection

from patron_tui.textsafe import visible
from patron_tui.ui.screens.import_run import MarkedCheckbox
from patron_tui.ui.screens.query_dialogs import MarkedSelectionList

#: choices whose values are open (a new homeroom is typed, not only picked): an Input that
#: suggests the known values instead of a closed Select
OPEN_CHOICES = frozenset({"homerooms"})
#: the Selections fields whose values come from a choices list when the model does not say
DEFAULT_CHOICES = {"grades": "grades", "statuses": "statuses", "homerooms": "homerooms",
                   "sites": "sites", "patron_types": "patron_types"}
DATE_FORMAT = "%m/%d/%Y"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a model, as the form shows it."""

    name: str
    title: str
    description: str = ""
    #: text | bool | choice | multi | date | integer | number | words | query_set
    kind: str = "text"
    choices: str | None = None          # a choices name (services' choices(conn, name))
    literal: tuple[tuple[str, str], ...] = ()   # (value, label) of a Literal or enum
    optional: bool = True
    max_length: int | None = None
    default: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class WrappingCheckbox(MarkedCheckbox):
    """A checkbox whose long title wraps (a ToggleButton is one line otherwise)."""

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, self.render().get_height(self.styles, width))


def _humanize(name: str) -> str:
    text = re.sub(r"[_\-]+", " ", str(name)).strip()
    return text[:1].upper() + text[1:]




def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, more = _unwrap(args[0])
            return inner, optional or more
        return annotation, optional
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation, False


def _literal_pairs(tp: Any, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if typing.get_origin(tp) is typing.Literal:
        values = [str(v) for v in typing.get_args(tp)]
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [str(m.value) for m in tp]
    else:
        return ()
    return tuple((v, str(labels.get(v) or _humanize(v))) for v in values)


def field_specs(model: type[BaseModel], words: Callable[[str], str] | None = None, *,
                default_choices: Mapping[str, str] | None = None) -> list[FieldSpec]:
    """The fields of `model` as form rows; `words` puts titles and descriptions in the
    district's terms (services.utilities.terms.Terms.apply)."""
    words = words or (lambda text: text)
    specs = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("hidden"):
            continue
        tp, optional = _unwrap(info.annotation)
        origin = typing.get_origin(tp)
        choices = extra.get("choices") or (default_choices or {}).get(name)
        labels = extra.get("labels") or {}
        literal: tuple[tuple[str, str], ...] = ()
        if tp is bool:
            kind = "bool"
        elif origin in (list, tuple, set, frozenset):
            args = typing.get_args(tp)
            inner = _unwrap(args[0])[0] if args else str
            literal = _literal_pairs(inner, labels)
            # an open list (homerooms: hundreds, and new ones typed) is typed, comma-separated
            kind = "multi" if (literal or choices and choices not in OPEN_CHOICES) else "words"
        elif (literal := _literal_pairs(tp, labels)):
            kind = "choice"
        elif tp is dt.date or tp is dt.datetime:
            kind = "date"
        elif tp is int:
            kind = "integer"
        elif tp in (float, Decimal):
            kind = "number"
        elif choices:
            kind = "choice"
        else:
            kind = "text"
        if name == "query_set":
            kind = "query_set"
        max_length = next((getattr(m, "max_length") for m in info.metadata
                           if getattr(m, "max_length", None) is not None), None)
        default = None
        if info.default is not PydanticUndefined:
            default = info.default
        elif info.default_factory is not None:
            try:
                default = info.default_factory()   # type: ignore[call-arg]
            except TypeError:
                default = None
        required = info.is_required()
        specs.append(FieldSpec(
            name=name, title=words(info.title or _humanize(name)),
            description=words(info.description or ""), kind=kind, choices=choices,
            literal=literal, optional=optional or not required, max_length=max_length,
            default=default, extra=extra,
        ))
    return specs


def shown_value(value: Any) -> str:
    """A default as the form shows it: dates MM/DD/YYYY, None blank."""
    if value is None:
        return ""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime(DATE_FORMAT)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _wid(prefix: str, name: str) -> str:
    return f"{prefix}-{name}".replace("_", "-")


class ModelForm(Vertical):
    """The rows of a model's fields; `values()` reads them back, `show_errors()` marks them.

    `options` gives the (value, label) pairs of each choices name (and "query_set": the saved
    sets). `values` preselects fields (e.g. a query set chosen on the Patrons screen)."""

    DEFAULT_CSS = """
    ModelForm { height: auto; }
    ModelForm .mf-row { height: auto; }
    ModelForm .mf-row > Label { width: 24; color: $foreground; }
    ModelForm .mf-row > Input { width: 1fr; }
    ModelForm .mf-row > Select { width: 1fr; }
    ModelForm .mf-row > Checkbox { width: 1fr; }
    ModelForm > Checkbox.mf-bool { width: 100%; height: auto; text-wrap: wrap; }
    ModelForm .mf-multi { height: auto; }
    ModelForm .mf-multi > Label { width: 24; }
    ModelForm .mf-multi > SelectionList { width: 1fr; height: auto; max-height: 6; }
    ModelForm Label.-error { color: $error; text-style: bold reverse; }
    ModelForm Checkbox.-error { color: $error; text-style: bold reverse; }
    ModelForm .mf-empty { color: $foreground-muted; height: auto; }
    """

    class Edited(Message):
        """A field of the form was changed by the operator."""

        def __init__(self, form: ModelForm, name: str) -> None:
            super().__init__()
            self.form = form
            self.name = name

        @property
        def control(self) -> ModelForm:
            return self.form

    class FieldFocused(Message):
        """A field took the focus (its description can be shown)."""

        def __init__(self, form: ModelForm, spec: FieldSpec) -> None:
            super().__init__()
            self.form = form
            self.spec = spec

    def __init__(self, specs: Sequence[FieldSpec], *, prefix: str,
                 options: Mapping[str, Sequence[tuple[str, str]]] | None = None,
                 values: Mapping[str, Any] | None = None, empty_text: str = "Nothing to set.",
                 **kw) -> None:
        super().__init__(**kw)
        self.specs = list(specs)
        self.prefix = prefix
        self.options = dict(options or {})
        self.initial = dict(values or {})
        self.empty_text = empty_text
        self._by_widget: dict[str, FieldSpec] = {}
        self._filling = True
        #: field -> the sentence of its last error (cleared when the field is edited)
        self.errors: dict[str, str] = {}

    # -- building -------------------------------------------------------------------------
    def _pairs(self, spec: FieldSpec) -> list[tuple[str, str]]:
        if spec.kind == "query_set":
            return list(self.options.get("query_set", ()))
        if spec.literal:
            return list(spec.literal)
        return [(str(v), str(lbl)) for v, lbl in self.options.get(spec.choices or "", ())]

    def _initial(self, spec: FieldSpec) -> Any:
        return self.initial[spec.name] if spec.name in self.initial else spec.default

    def widget_for(self, spec: FieldSpec) -> Widget:
        wid = _wid(self.prefix, spec.name)
        value = self._initial(spec)
        tooltip = spec.description or None
        if spec.kind == "bool":
            return WrappingCheckbox(Content(visible(spec.title)), value=bool(value), id=wid, compact=True)
        if spec.kind in ("choice", "query_set") and not (spec.choices in OPEN_CHOICES and not spec.literal):
            pairs = self._pairs(spec)
            shown = shown_value(value)
            # a preselected value that is not (or no longer) offered is kept, not dropped
            if shown and shown not in {v for v, _ in pairs}:
                pairs = [*pairs, (shown, shown)]
            # a required choice without a default starts blank: the operator chooses, never a
            # silently preselected first entry
            blank = spec.optional or not shown or not pairs
            select: Select[str] = Select(
                [(Text(visible(label), no_wrap=True, overflow="ellipsis"), v) for v, label in pairs],
                prompt="(none)" if spec.kind == "query_set" else "(choose)" if not spec.optional else "(not set)",
                allow_blank=blank, value=shown if shown else Select.NULL, id=wid, compact=True)
            return select
        if spec.kind == "multi":
            chosen = {str(v) for v in (value or [])}
            pairs = self._pairs(spec)
            known = {v for v, _ in pairs}
            pairs += [(v, v) for v in sorted(chosen - known)]
            return MarkedSelectionList(
                *[Selection(Content(visible(label)), v, v in chosen) for v, label in pairs],
                id=wid, compact=True)
        kw: dict[str, Any] = {"value": shown_value(value), "id": wid, "compact": True}
        if spec.kind == "date":
            kw.update(placeholder="MM/DD/YYYY", restrict=r"[0-9/]*", max_length=10)
        elif spec.kind == "integer":
            kw.update(type="integer", placeholder="a whole number")
        elif spec.kind == "number":
            kw.update(type="number", placeholder="0.00")
        elif spec.kind == "words":
            known = ", ".join(visible(v) for v, _ in self._pairs(spec)[:3])
            kw.update(placeholder=f"comma-separated, e.g. {known}" if known else "comma-separated")
        elif spec.kind == "choice":   # open choices: typed, with the known values suggested
            kw.update(suggester=SuggestFromList([v for v, _ in self._pairs(spec)], case_sensitive=False),
                      placeholder="blank: none" if spec.optional else "")
        if spec.max_length:
            kw["max_length"] = spec.max_length
            if spec.kind == "text" and "placeholder" not in kw:
                kw["placeholder"] = f"up to {spec.max_length:,} characters"
        widget = Input(**kw)
        if tooltip:
            widget.tooltip = Content(tooltip)
        return widget

    def compose(self) -> ComposeResult:
        if not self.specs:
            yield Static(Content(self.empty_text), classes="mf-empty")
        for spec in self.specs:
            widget = self.widget_for(spec)
            self._by_widget[widget.id or ""] = spec
            label = Label(Content(visible(spec.title)), id=_wid(self.prefix, spec.name) + "-label")
            if spec.kind == "bool":   # the box carries its title: "[X] Replace existing notes"
                widget.add_class("mf-bool")
                yield widget
            elif spec.kind == "multi":
                yield Horizontal(label, widget, classes="mf-multi")
            else:
                yield Horizontal(label, widget, classes="mf-row")

    def on_mount(self) -> None:
        self.call_after_refresh(self._filled)

    def _filled(self) -> None:
        self._filling = False

    # -- reading --------------------------------------------------------------------------
    def field_widget(self, name: str) -> Widget:
        return self.query_one("#" + _wid(self.prefix, name))

    def values(self) -> dict[str, Any]:
        """{field: str | bool | list[str] | None}: text as typed, a blank choice as None."""
        out: dict[str, Any] = {}
        for spec in self.specs:
            widget = self.field_widget(spec.name)
            if isinstance(widget, Checkbox):
                out[spec.name] = widget.value
            elif isinstance(widget, Select):
                out[spec.name] = None if widget.is_blank() else str(widget.value)
            elif isinstance(widget, SelectionList):
                order = [v for v, _ in self._pairs(spec)]
                chosen = [str(v) for v in widget.selected]
                out[spec.name] = sorted(chosen, key=lambda v: order.index(v) if v in order else len(order))
            elif isinstance(widget, Input):
                text = widget.value.strip()
                if spec.kind == "words":
                    out[spec.name] = [w.strip() for w in text.split(",") if w.strip()]
                else:
                    out[spec.name] = text or None
        return out

    def set_value(self, name: str, value: Any) -> None:
        widget = self.field_widget(name)
        if isinstance(widget, Select):
            widget.value = Select.NULL if value in (None, "") else str(value)
        elif isinstance(widget, Input):
            widget.value = shown_value(value)
        elif isinstance(widget, Checkbox):
            widget.value = bool(value)

    # -- errors ---------------------------------------------------------------------------
    def spec(self, name: str) -> FieldSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    def show_errors(self, errors: Mapping[str, str]) -> None:
        """Mark the fields named in `errors` (their label, or a checkbox itself); the screen
        says the sentence (and shows it again when the field takes the focus)."""
        self.errors = {k: v for k, v in errors.items() if self.spec(k) is not None}
        for spec in self.specs:
            wid = _wid(self.prefix, spec.name)
            marked = self.query_one(f"#{wid}" if spec.kind == "bool" else f"#{wid}-label")
            marked.set_class(spec.name in self.errors, "-error")

    def focus_field(self, name: str) -> None:
        if self.spec(name) is not None:
            self.field_widget(name).focus()

    # -- events ---------------------------------------------------------------------------
    def _edited(self, widget: Widget | None) -> None:
        if self._filling or widget is None:
            return
        spec = self._by_widget.get(widget.id or "")
        if spec is not None:
            self.post_message(self.Edited(self, spec.name))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._edited(event.input)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._edited(event.checkbox)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._edited(event.select)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        self._edited(event.selection_list)

    def on_descendant_focus(self, event) -> None:
        widget = event.widget
        while widget is not None and widget is not self:
            spec = self._by_widget.get(widget.id or "")
            if spec is not None:
                self.post_message(self.FieldFocused(self, spec))
                return
            widget = widget.parent


def parse_date(text: str) -> dt.date:
    """MM/DD/YYYY (also M/D/YYYY) as a date; ValueError otherwise."""
    return dt.datetime.strptime(text.strip(), DATE_FORMAT).date()


__all__ = ["DATE_FORMAT", "FieldSpec", "ModelForm", "field_specs", "parse_date", "shown_value"]

