"""Work-arounds for running transformers' GLM-4V classes in this project's environments."""

from __future__ import annotations


def expose_video_processor_base() -> None:
    """Without torchvision, transformers does not export its video-processor base classes at top
    level, so Glm4vProcessor (which owns a video processor) fails its own argument type check. The
    classes import fine; exposing them makes AutoProcessor.from_pretrained work as with torchvision."""
    import transformers
    from transformers import processing_utils
    from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

    for module in (transformers, processing_utils.transformers_module):
        for cls in (BaseVideoProcessor, VideoProcessorMixin):
            if not hasattr(module, cls.__name__):
                setattr(module, cls.__name__, cls)


def load_processor(model_dir):
    """Glm4vProcessor for a checkpoint or bundle folder. AutoProcessor when torchvision is present;
    otherwise the same classes assembled by hand (the video half is unused for images)."""
    from transformers.utils import is_torchvision_available

    expose_video_processor_base()
    if is_torchvision_available():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model_dir)
    from transformers import AutoTokenizer, Glm4vImageProcessorPil, Glm4vProcessor
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    image_processor = Glm4vImageProcessorPil.from_pretrained(model_dir)
    return Glm4vProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Glm4vVideoProcessor(),
        chat_template=tokenizer.chat_template,
    )
