"""Server settings: one flat frozen dataclass, built by the CLI or by tests."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model_name: str = "edgevlm-demo"
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Request bodies carry base64 images (4/3 of the bytes) plus text.
    max_body_bytes: int = 32 * MB
    max_image_bytes: int = 20 * MB
    max_image_pixels: int = 40_000_000
    max_images: int = 8
    image_hosts: tuple[str, ...] = ()
    image_fetch_timeout_s: float = 10.0
    default_max_tokens: int = 512
    # Default sampling is greedy, like the model's generation_config; clients may ask for more.
    default_temperature: float = 0.0
    retry_after_s: int = 2
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be non-empty when set")
        for name in (
            "max_body_bytes",
            "max_image_bytes",
            "max_image_pixels",
            "max_images",
            "default_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
