"""The conversion gate: a converted model is published only if it still behaves like the float model.

A variant fails when, on any verified split, its accuracy is more than `max_drop` percentage
points below the float model's on the same images, or its decisions agree with the float model's
on fewer than `min_agreement` of them. The gate applies to every variant (a float32 or float16
model that fails it means the conversion, not quantization, broke something); the int8 model is
the one it exists for.

A failing variant is still written to `export/<variant>/`, with ``"status": "rejected"`` and the
reasons in its manifest's ``notes``: `device.manifest.load_manifest` refuses to load it with that
message, so a device never runs it, while the files stay there to be inspected.
"""

from __future__ import annotations

from pydantic import Field

from device.manifest import Strict

DEFAULT_MAX_DROP = 1.0  # accuracy points
DEFAULT_MIN_AGREEMENT = 0.98


class GateConfig(Strict):
    max_drop: float = Field(DEFAULT_MAX_DROP, ge=0.0, le=100.0)
    min_agreement: float = Field(DEFAULT_MIN_AGREEMENT, ge=0.0, le=1.0)

    def failures(self, variant: str, splits: dict[str, dict]) -> list[str]:
        """Human-readable reasons `variant` fails, one per split and check; empty = passes."""
        out = []
        for name, m in splits.items():
            if m["n"] == 0:
                continue
            if m["accuracy_drop_points"] > self.max_drop + 1e-9:
                out.append(
                    f"{variant} {name}: accuracy {100 * m['accuracy']:.2f}% is {m['accuracy_drop_points']:.2f} points "
                    f"below the float model's {100 * m['float_accuracy']:.2f}% (max_drop {self.max_drop:g})"
                )
            if m["agreement"] < self.min_agreement - 1e-9:
                out.append(
                    f"{variant} {name}: agreement with the float model {100 * m['agreement']:.2f}% < "
                    f"{100 * self.min_agreement:g}% (min_agreement)"
                )
        return out
