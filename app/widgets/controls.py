"""The left panel: everything a request is made of."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets.control_box import ControlBox
from models.families import FULL_INTERVAL, Family
from runtime import (
    MAX_CANDIDATES,
    GenerationRequest,
    ModelInfo,
    aspect_presets,
    random_seed,
)

CUSTOM = "Custom"
FIT_NOTES = {True: "Fits this device.",
             False: "May not fit this device's memory: expect a slow run, or pick a smaller "
                    "model."}


# Sprint makes a usable image in one or two steps: live regeneration stays interactive.
LIVE_SPRINT_STEPS = 2


def guidance_tip(family: Family) -> str:
    """What the guidance box does for this family (and, for the bundled model, when)."""
    if not family.uses_cfg:
        return (f"How closely to follow the prompt. A {family.label} model takes it as an "
                "input of each step, at no extra cost.")
    tip = ("How closely to follow the prompt (classifier-free guidance: a second pass per "
           "step); 1 turns it off.")
    low, high = family.guidance_interval
    if (low, high) != FULL_INTERVAL:
        tip += (f" This model applies it only at noise levels {low:g}-{high:g} (of 1 = pure "
                "noise); the other steps run one pass.")
    contrast = family.contrast
    if contrast is not None:
        low, high = contrast.interval
        away = contrast.about or "the prompt rewritten (" + "; ".join(
            f"'{a}' as '{b}'" for rule in contrast.rules for a, b in rule.rewrites) + ")"
        tip += (f" At noise levels {low:g}-{high:g} it also steers away from {away} (a second "
                "pass for those steps, only for prompts it applies to).")
    return tip


def model_label(model: ModelInfo, fits: bool | None) -> str:
    """Name, family and size, and whether it fits (unknown until the device is found)."""
    mark = {None: "", True: "", False: "  (may not fit)"}[fits]
    return f"{model.name}: {model.description}{mark}"


class GenerationPanel(QWidget):
    generate_requested = Signal()
    model_changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.models: list[ModelInfo] = []
        self._last_in_mode: dict[bool, str] = {}  # fast? -> path of the model last picked in it
        self.fits: dict[str, bool] = {}
        self.last_seed: int | None = None
        layout = QVBoxLayout(self)

        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe the image (Ctrl+Enter to generate)")
        self.prompt.setAccessibleName("Prompt")
        self.prompt.setTabChangesFocus(True)
        layout.addWidget(QLabel("&Prompt", buddy=self.prompt))
        layout.addWidget(self.prompt, 2)

        # Collapsed until wanted: most prompts need no negative prompt, and a hidden one is
        # not applied, so what is sent is what is shown.
        self.negative_box = QToolButton()
        self.negative_box.setText("&Negative prompt")
        self.negative_box.setCheckable(True)
        self.negative_box.setAutoRaise(True)
        self.negative_box.setArrowType(Qt.ArrowType.RightArrow)
        self.negative_box.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("What to keep out of the image")
        self.negative.setAccessibleName("Negative prompt")
        self.negative.setTabChangesFocus(True)
        self.negative.setMaximumHeight(70)
        self.negative.setVisible(False)
        self.negative_box.toggled.connect(self._show_negative)
        layout.addWidget(self.negative_box)
        layout.addWidget(self.negative)

        form = QFormLayout()
        self.model = QComboBox()
        self.model.setAccessibleName("Model")
        self.model.currentIndexChanged.connect(self._on_model)
        form.addRow("&Model", self.model)
        self.model_note = QLabel()
        self.model_note.setWordWrap(True)
        self.model_note.setObjectName("note")
        form.addRow("", self.model_note)
        self.mode = QComboBox()
        self.mode.addItems(["Quality", "Fast"])
        self.mode.setToolTip("Quality: a SANA model, 20 steps. Fast: a SANA-Sprint model, "
                             "1 to 4 steps. Available when both kinds are installed.")
        self.mode.currentIndexChanged.connect(self._on_mode)
        form.addRow("M&ode", self.mode)

        self.aspect = QComboBox()
        self.aspect.currentIndexChanged.connect(self._on_aspect)
        form.addRow("&Aspect", self.aspect)
        size_row = QHBoxLayout()
        self.width_box, self.height_box = QSpinBox(), QSpinBox()
        for box, name in ((self.width_box, "Width"), (self.height_box, "Height")):
            box.setRange(32, 4096)
            box.setSingleStep(32)
            box.setSuffix(" px")
            box.setAccessibleName(name)
            box.valueChanged.connect(self._on_size_edit)
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("x"))
        size_row.addWidget(self.height_box)
        form.addRow(QLabel("Si&ze", buddy=self.width_box), size_row)

        self.steps = QSpinBox()
        self.steps.setAccessibleName("Steps")
        form.addRow("&Steps", self.steps)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setAccessibleName("Guidance")
        form.addRow("&Guidance", self.guidance)

        seed_row = QHBoxLayout()
        self.seed = QLineEdit()
        self.seed.setValidator(QRegularExpressionValidator(QRegularExpression(r"\d{1,10}")))
        self.seed.setAccessibleName("Seed")
        self.lock_seed = QCheckBox("&Lock")
        self.lock_seed.setToolTip("Keep this seed; otherwise a new random seed each time")
        self.reuse_seed = QToolButton()
        self.reuse_seed.setText("Last")
        self.reuse_seed.setToolTip("Reuse the seed of the last image")
        self.reuse_seed.clicked.connect(self._reuse_last_seed)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.lock_seed)
        seed_row.addWidget(self.reuse_seed)
        form.addRow(QLabel("S&eed", buddy=self.seed), seed_row)
        self.count = QSpinBox()
        self.count.setRange(1, 16)
        self.count.setAccessibleName("Image count")
        form.addRow("&Count", self.count)
        self.candidates = QSpinBox()
        self.candidates.setRange(1, MAX_CANDIDATES)
        self.candidates.setAccessibleName("Best of")
        form.addRow("&Best of", self.candidates)
        layout.addLayout(form)
        self.control = ControlBox()
        self.control.setVisible(False)
        layout.addWidget(self.control)

        buttons = QHBoxLayout()
        self.generate_button = QPushButton("&Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setToolTip("Ctrl+Enter")
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Esc")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        layout.addLayout(buttons)
        layout.addStretch(0)
        self.seed.setText(str(random_seed()))

    # ----- models --------------------------------------------------------------------------

    def _show_negative(self, shown: bool) -> None:
        self.negative.setVisible(shown)
        self.negative_box.setArrowType(Qt.ArrowType.DownArrow if shown
                                       else Qt.ArrowType.RightArrow)

    def set_models(self, models: list[ModelInfo], preferred: str) -> None:
        """List the models; whether each fits the device comes later (`set_fits`), from the
        worker, so listing never waits for torch."""
        self.models = models
        self.model.blockSignals(True)
        self.model.clear()
        for model in models:
            self.model.addItem(model_label(model, None), str(model.path))
        index = max(0, self.model.findData(preferred))
        self.model.blockSignals(False)
        self.model.setCurrentIndex(index)
        self._on_model()

    def set_fits(self, fits: dict[str, bool]) -> None:
        self.fits = fits
        for i, model in enumerate(self.models):
            self.model.setItemText(i, model_label(model, fits.get(str(model.path))))
        self._show_note()

    def _show_note(self) -> None:
        model = self.current_model()
        if model is None:
            return
        fit = self.fits.get(str(model.path))
        lines = [FIT_NOTES[fit]] if fit is not None else []
        if model.family.knows:
            lines.append(model.family.knows)
        self.model_note.setText("\n".join(lines))
        self.model_note.setVisible(bool(lines))

    def current_model(self) -> ModelInfo | None:
        index = self.model.currentIndex()
        return self.models[index] if 0 <= index < len(self.models) else None

    def _on_model(self) -> None:
        model = self.current_model()
        if model is None:
            return
        family = model.family
        self.steps.setRange(*family.step_range)
        self.steps.setValue(family.default_steps)
        self.guidance.setValue(family.default_guidance)
        self.guidance.setToolTip(guidance_tip(family))
        self.candidates.setEnabled(model.judge)
        self.candidates.setValue(family.candidates if model.judge else 1)
        self.candidates.setToolTip(
            f"Draw this many images for each one asked for and keep the one the model's prompt "
            f"judge finds closest to the prompt; each more costs about one image's time. The "
            f"model's default is {family.candidates}." if model.judge else
            "This model has no prompt judge, so it draws one image for each one asked for.")
        self._show_note()
        self.width_box.setMaximum(model.max_side)
        self.height_box.setMaximum(model.max_side)
        self.aspect.blockSignals(True)
        self.aspect.clear()
        for name, (w, h) in aspect_presets(model.native_size).items():
            self.aspect.addItem(f"{name}  ({w}x{h})", (w, h))
        self.aspect.addItem(CUSTOM, None)
        self.aspect.blockSignals(False)
        self.aspect.setCurrentIndex(0)
        self._on_aspect()
        self.control.setVisible(model.controlnet)
        kinds = {m.family.key for m in self.models}
        self.mode.setEnabled(bool({"sana-sprint"} & kinds) and len(kinds) > 1)
        self.mode.blockSignals(True)
        self.mode.setCurrentIndex(1 if family.key == "sana-sprint" else 0)
        self.mode.blockSignals(False)
        self._last_in_mode[family.key == "sana-sprint"] = str(model.path)
        self.model_changed.emit()

    def _on_mode(self, index: int) -> None:
        want_fast = index == 1
        last = self.model.findData(self._last_in_mode.get(want_fast))
        if last >= 0:  # back to the model picked the last time this mode was on
            self.model.setCurrentIndex(last)
            return
        for i, model in enumerate(self.models):
            if (model.family.key == "sana-sprint") == want_fast:
                self.model.setCurrentIndex(i)
                return

    def _on_aspect(self) -> None:
        size = self.aspect.currentData()
        if size:
            for box, value in ((self.width_box, size[0]), (self.height_box, size[1])):
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)

    def _on_size_edit(self) -> None:
        self.aspect.blockSignals(True)
        self.aspect.setCurrentIndex(self.aspect.count() - 1)
        self.aspect.blockSignals(False)

    # ----- requests ------------------------------------------------------------------------

    def _reuse_last_seed(self) -> None:
        if self.last_seed is not None:
            self.seed.setText(str(self.last_seed))
            self.lock_seed.setChecked(True)

    def request(self, live: bool = False) -> GenerationRequest:
        """The request the controls describe. A live request (regenerating while a sketch is
        drawn) keeps the seed, so only the sketch changes the image, makes one image, and on a
        SANA-Sprint model takes at most LIVE_SPRINT_STEPS steps."""
        if not self.lock_seed.isChecked() and not (live and self.seed.text()):
            self.seed.setText(str(random_seed()))
        model = self.current_model()
        steps, count = self.steps.value(), self.count.value()
        if live:
            count = 1
            if model is not None and model.family.key == "sana-sprint":
                steps = min(steps, LIVE_SPRINT_STEPS)
        return GenerationRequest(
            prompt=self.prompt.toPlainText(),
            negative_prompt=self.negative.toPlainText() if self.negative_box.isChecked() else "",
            width=self.width_box.value(), height=self.height_box.value(),
            steps=steps, guidance_scale=round(self.guidance.value(), 2),
            seed=int(self.seed.text()), count=count,
            model=model.name if model else "",
            control_image=self.control.path if self.control.isVisible() else None,
            control_scale=round(self.control.scale.value(), 2),
            candidates=self.candidates.value() if model is not None and model.judge else None)

    def apply(self, request: GenerationRequest) -> None:
        """Restore a past request ("use these settings", or a dropped PNG)."""
        for i, model in enumerate(self.models):
            if request.model and model.name == request.model:
                self.model.setCurrentIndex(i)
        self.prompt.setPlainText(request.prompt)
        self.negative_box.setChecked(bool(request.negative_prompt))
        self.negative.setPlainText(request.negative_prompt)
        if request.width and request.height:
            self.width_box.setValue(request.width)
            self.height_box.setValue(request.height)
        if request.steps is not None:
            self.steps.setValue(request.steps)
        if request.guidance_scale is not None:
            self.guidance.setValue(request.guidance_scale)
        self.seed.setText(str(request.seed))
        self.lock_seed.setChecked(True)
        self.count.setValue(max(1, min(16, request.count)))
        if request.candidates is not None and self.candidates.isEnabled():
            self.candidates.setValue(max(1, min(MAX_CANDIDATES, request.candidates)))
        self.control.scale.setValue(request.control_scale)
        if request.control_image and Path(request.control_image).is_file():
            self.control.set_image(Path(request.control_image))
        else:
            self.control.clear()

    def set_busy(self, busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)


def focus_prompt(panel: GenerationPanel) -> None:
    panel.prompt.setFocus(Qt.FocusReason.ShortcutFocusReason)
