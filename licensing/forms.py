"""The licence form: paste the text or upload the file."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .document import MAX_TEXT


class LicenceForm(forms.Form):
    text = forms.CharField(
        label=_("Licence text"),
        required=False,
        max_length=MAX_TEXT,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "mono"}),
        help_text=_("Paste everything from “-----BEGIN UMS LICENCE-----” to the end."),
    )
    file = forms.FileField(
        label=_("or the licence file"),
        required=False,
        help_text=_("The .licence file you received."),
    )

    def __init__(self, *args: Any, actor: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            data = upload.read(MAX_TEXT + 1)
            if len(data) > MAX_TEXT:
                self.add_error("file", _("A licence file is much smaller than this."))
                return cleaned
            try:
                cleaned["text"] = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                self.add_error("file", _("This is not a licence file (not text)."))
                return cleaned
        if not (cleaned.get("text") or "").strip() and not self.errors:
            self.add_error("text", _("Paste the licence text or choose the licence file."))
        return cleaned
