"""URL converters. ``id`` bounds a primary key to 18 digits so an absurd id in a URL is a
404 instead of a database overflow error."""

from django.urls import register_converter


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
