"""A zoo of tiny keras-hub models: every family that builds from a small config, no downloads.

Each entry is a builder returning a freshly built model (a backbone, or a compiled task).  The
sizes are the smallest the constructors accept, so that one forward/backward step takes well
under a second.  ``FAST`` is the representative dozen that runs in ``make test``; ``ZOO`` holds
every entry and runs under ``make test-slow``.
"""

from __future__ import annotations

from collections.abc import Callable


def _hub():
    import keras_hub

    return keras_hub


def _resnet(image_size=64):
    return _hub().models.ResNetBackbone(
        input_conv_filters=[8], input_conv_kernel_sizes=[3], stackwise_num_filters=[8, 8],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(image_size, image_size, 3))


def moonshine_backbone():
    """Audio: raw samples through a 127-wide, stride-64 Conv1D."""
    return _hub().models.MoonshineBackbone(
        vocabulary_size=32, filter_dim=16, encoder_num_layers=1, decoder_num_layers=1,
        hidden_dim=16, intermediate_dim=32, encoder_num_heads=2, decoder_num_heads=2)


def whisper_backbone():
    """Audio: log-mel frames into a fixed-length encoder."""
    return _hub().models.WhisperBackbone(
        vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        num_mels=8, max_encoder_sequence_length=16, max_decoder_sequence_length=8)


def retinanet_detector():
    """Detection: compiled loss on a {"boxes", "labels"} target dict."""
    hub = _hub()
    backbone = hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 8, 8],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2],
        block_type="basic_block", image_shape=(None, None, 3))
    fpn = hub.models.RetinaNetBackbone(
        image_encoder=backbone, min_level=3, max_level=4, use_p5=False)
    detector = hub.models.RetinaNetObjectDetector(backbone=fpn, num_classes=3)
    detector.compile()
    return detector


def sam_segmenter():
    """Multimodal prompts: points/labels/boxes/masks whose counts must agree."""
    hub = _hub()
    image_size = 64
    image_encoder = hub.models.ViTDetBackbone(
        hidden_size=8, num_layers=2, intermediate_dim=16, num_heads=2,
        global_attention_layer_indices=[1], patch_size=16, num_output_channels=8,
        window_size=2, image_shape=(image_size, image_size, 3))
    prompt_encoder = hub.layers.SAMPromptEncoder(
        hidden_size=8, image_embedding_size=(4, 4), input_image_size=(image_size, image_size),
        mask_in_channels=4)
    mask_decoder = hub.layers.SAMMaskDecoder(
        num_layers=1, hidden_size=8, intermediate_dim=16, num_heads=2, embedding_dim=8,
        num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=8)
    backbone = hub.models.SAMBackbone(image_encoder=image_encoder,
                                      prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
    return hub.models.SAMImageSegmenter(backbone=backbone)


def gemma3_vision_lm():
    """Multimodal: vision_indices point at positions of the token sequence."""
    hub = _hub()
    vision = hub.models.Gemma3VisionEncoder(
        image_size=16, patch_size=4, num_heads=2, hidden_dim=8, num_layers=1,
        intermediate_dim=16, output_dim=8, pool_size=2)
    backbone = hub.models.Gemma3Backbone(
        vocabulary_size=32, image_size=16, num_layers=1, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=8, intermediate_dim=16, head_dim=4,
        vision_encoder=vision)
    return hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)


def mixtral_lm():
    """Mixture of experts: a router picks experts per token."""
    hub = _hub()
    backbone = hub.models.MixtralBackbone(
        vocabulary_size=32, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, num_experts=2, top_k=1)
    return hub.models.MixtralCausalLM(backbone=backbone, preprocessor=None)


def t5_backbone():
    """Seq2seq: encoder and decoder token inputs."""
    return _hub().models.T5Backbone(
        vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        key_value_dim=4)


def bart_seq2seq():
    """Seq2seq task, compiled."""
    hub = _hub()
    backbone = hub.models.BartBackbone(
        vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=16)
    return hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)


def parseq_lm():
    """A compute_loss that requires a sample_weight."""
    hub = _hub()
    encoder = hub.models.ViTBackbone(
        image_shape=(16, 32, 3), patch_size=(4, 8), num_layers=1, num_heads=2, hidden_dim=8,
        mlp_dim=16, use_class_token=False)
    tokenizer = hub.tokenizers.PARSeqTokenizer(max_label_length=5)
    preprocessor = hub.models.PARSeqCausalLMPreprocessor(tokenizer=tokenizer, sequence_length=6)
    backbone = hub.models.PARSeqBackbone(
        image_encoder=encoder, vocabulary_size=tokenizer.vocabulary_size(), max_label_length=6, decoder_hidden_dim=8,
        num_decoder_layers=1, num_decoder_heads=2, decoder_mlp_dim=16)
    return hub.models.PARSeqCausalLM(backbone=backbone, preprocessor=preprocessor)


ZOO: dict[str, Callable] = {
    "MoonshineBackbone": moonshine_backbone,
    "WhisperBackbone": whisper_backbone,
    "RetinaNetObjectDetector": retinanet_detector,
    "SAMImageSegmenter": sam_segmenter,
    "Gemma3CausalLM+vision": gemma3_vision_lm,
    "MixtralCausalLM": mixtral_lm,
    "T5Backbone": t5_backbone,
    "BartSeq2SeqLM": bart_seq2seq,
    "PARSeqCausalLM": parseq_lm,
}
