"""The key footer: Textual's Footer, rebuilt only when the keys it shows change.

Textual rebuilds its footer (removes and mounts every key) each time the focus moves, even
when the keys shown stay the same, and each rebuild lays the whole screen out again: twice
per Tab in the job form. An operator tabbing through a form over SSH waits for that.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    _shown_keys: tuple | None = None

    def _keys(self) -> tuple:
        """Everything `compose` reads from the screen's bindings, in its order."""
        app = self.app
        shown = tuple(
            (binding.key, app.get_key_display(binding), binding.description, binding.action, enabled, tooltip,
             binding.tooltip, binding.group)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )
        palette = self.screen.active_bindings.get(app.COMMAND_PALETTE_BINDING) if app.ENABLE_COMMAND_PALETTE else None
        if palette is not None:
            _, binding, enabled, tooltip = palette
            palette = (binding.key, app.get_key_display(binding), binding.description, binding.action, enabled,
                       binding.tooltip)
        return shown, palette, self.show_command_palette

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            keys = self._keys()
            if keys == self._shown_keys and self._bindings_ready:
                return
            self._shown_keys = keys
        super().bindings_changed(screen)
