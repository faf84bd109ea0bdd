"""A zoo of tiny keras-hub models: every family that builds from a small config, no downloads.

Each entry is a builder returning a freshly built model (a backbone, or a task).  The sizes are
the smallest the constructors accept, so that one step takes about a second.  ``generated_zoo``
builds every backbone whose required arguments are all in ``TINY`` (and every task on it);
``HAND_BUILT`` adds the composites that need sub-models (detectors, SAM, a Gemma3 with a vision
encoder, PARSeq).  ``test_zoo.py`` runs a representative dozen in ``make test`` and all of
``full_zoo()`` under ``make test-slow``.
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


def whisper_backbone():
    """Audio: log-mel frames into a fixed-length encoder."""
    return _hub().models.WhisperBackbone(
        vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        num_mels=8, max_encoder_sequence_length=16, max_decoder_sequence_length=8)


def dfine_detector():
    """Detection: a DETR-style detector whose compute_loss matches queries to boxes/labels."""
    hub = _hub()
    image_shape = (32, 32, 3)
    hgnet = hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3],
                                                          [16, 8, 16, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
        depths=[1, 1], hidden_sizes=[16, 16], embedding_size=8,
        use_learnable_affine_block=True, hidden_act="relu", image_shape=image_shape,
        out_features=["stage1", "stage2"])
    backbone = hub.models.DFineBackbone(
        backbone=hgnet, decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_labels=3,
        num_denoising=0, hidden_dim=16, learn_initial_query=False, num_queries=4,
        anchor_image_size=image_shape[:2], feat_strides=[4, 8], num_feature_levels=2,
        encoder_in_channels=[16, 16], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=16, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5,
        eval_idx=-1, num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16,
        decoder_n_points=[2, 2], lqe_hidden_dim=8, num_lqe_layers=1,
        out_features=["stage1", "stage2"], image_shape=image_shape)
    detector = hub.models.DFineObjectDetector(backbone=backbone, num_classes=3)
    detector.compile()
    return detector


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
    return hub.models.PARSeqCausalLM(backbone=backbone, preprocessor=preprocessor, num_perms=2)


def gemma3n(vision: bool = True, audio: bool = True):
    """Multimodal: a MobileNetV5 vision tower and an audio encoder entered only where the token
    ids hold the image / audio placeholder id; the audio mask marks the frames to drop."""
    from keras_hub.src.models.gemma3n.gemma3n_audio_encoder import Gemma3nAudioEncoder
    from keras_hub.src.models.gemma3n.gemma3n_backbone import Gemma3nBackbone
    from keras_hub.src.models.mobilenetv5.mobilenetv5_backbone import MobileNetV5Backbone
    from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import convert_arch_def_to_stackwise

    kwargs = dict(
        text_vocab_size=64, text_hidden_size=8, num_hidden_layers=1, pad_token_id=0,
        num_attention_heads=1, num_key_value_heads=1, head_dim=8, intermediate_size=[16],
        hidden_activation="gelu_approximate", layer_types=["full_attention"], sliding_window=4,
        rope_theta=10000.0, max_position_embeddings=16, vocab_size_per_layer_input=64,
        hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1)
    if vision:
        tower = MobileNetV5Backbone(**convert_arch_def_to_stackwise([["er_r1_k3_s1_e1_c16"]]),
                                    num_features=4, image_shape=(32, 32, 3), use_msfa=False)
        kwargs.update(vision_encoder_config=tower.get_config(), vision_hidden_size=16,
                      vision_vocab_size=4, vision_vocab_offset=40, image_token_id=30,
                      vision_soft_tokens_per_image=4)
    if audio:
        encoder = Gemma3nAudioEncoder(
            hidden_size=8, input_feat_size=8, sscp_conv_channel_size=[4, 8],
            sscp_conv_kernel_size=[(3, 3), (3, 3)], sscp_conv_stride_size=[(2, 2), (2, 2)],
            sscp_conv_group_norm_eps=1e-5, num_hidden_layers=1, rms_norm_eps=1e-6,
            gradient_clipping=1.0, residual_weight=0.5, num_attention_heads=1,
            attention_chunk_size=4, num_attention_context_right=5, num_attention_context_left=5,
            attention_logit_cap=50.0, conv_kernel_size=5, reduction_factor=1)
        kwargs.update(audio_encoder_config=encoder.get_config(), audio_hidden_size=8,
                      audio_vocab_size=4, audio_vocab_offset=50, audio_token_id=31,
                      audio_soft_tokens_per_image=4)
    return Gemma3nBackbone(**kwargs)


def gemma4(vision: bool = True, audio: bool = True):
    """Multimodal: image patches (images × patches × patch width) and mel clips scattered into
    the text at ``vision_indices`` / ``audio_indices``, whose count is images × tokens per image."""
    from keras_hub.src.models.gemma4.gemma4_audio_encoder import Gemma4AudioEncoder
    from keras_hub.src.models.gemma4.gemma4_backbone import Gemma4Backbone
    from keras_hub.src.models.gemma4.gemma4_vision_encoder import Gemma4VisionEncoder

    kwargs = dict(vocabulary_size=64, image_size=16, num_layers=1, num_query_heads=2,
                  num_key_value_heads=1, hidden_dim=8, intermediate_dim=16, head_dim=4,
                  attention_logit_soft_cap=None, final_logit_soft_cap=None)
    if vision:
        kwargs["vision_encoder"] = Gemma4VisionEncoder(
            image_size=16, patch_size=4, pool_size=2, num_layers=1, num_heads=2, head_dim=4,
            num_key_value_heads=2, hidden_dim=8, intermediate_dim=16, output_dim=8)
    if audio:
        kwargs["audio_encoder"] = Gemma4AudioEncoder(
            input_feat_size=8, hidden_size=8, num_heads=2, num_layers=1, chunk_size=4,
            context_left=5, context_right=0, sscp_conv_channels=(4, 2),
            sscp_kernel_sizes=((3, 3), (3, 3)), sscp_stride_sizes=((2, 2), (2, 2)),
            output_proj_dims=None, output_dim=8)
        kwargs["num_audio_tokens_per_clip"] = 4
    return Gemma4Backbone(**kwargs)


def sam3_backbone(task: bool = False):
    """Text and box prompts: box labels index a 2-row table beside a 1-row CLS embedding, and
    keras-hub's geometry encoder takes one box per row only (its self-attention mask breaks
    when boxes + 1 differs from the batch size), while the text keeps its length."""
    from keras_hub.src.models.sam3.sam3_detr_decoder import SAM3DetrDecoder
    from keras_hub.src.models.sam3.sam3_detr_encoder import SAM3DetrEncoder
    from keras_hub.src.models.sam3.sam3_geometry_encoder import SAM3GeometryEncoder
    from keras_hub.src.models.sam3.sam3_mask_decoder import SAM3MaskDecoder
    from keras_hub.src.models.sam3.sam3_pc_backbone import SAM3PromptableConceptBackbone
    from keras_hub.src.models.sam3.sam3_pc_image_segmenter import SAM3PromptableConceptImageSegmenter
    from keras_hub.src.models.sam3.sam3_text_encoder import SAM3TextEncoder
    from keras_hub.src.models.sam3.sam3_vision_encoder import SAM3VisionEncoder

    size, small = 56, dict(hidden_dim=8, intermediate_dim=16, num_heads=2, num_layers=1)
    backbone = SAM3PromptableConceptBackbone(
        vision_encoder=SAM3VisionEncoder(
            image_shape=(size, size, 3), patch_size=14, fpn_hidden_dim=8,
            fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(28, 28, 3),
            window_size=2, global_attn_indexes=[0], **small),
        text_encoder=SAM3TextEncoder(vocabulary_size=32, embedding_dim=8, **small),
        geometry_encoder=SAM3GeometryEncoder(roi_size=7, **small),
        detr_encoder=SAM3DetrEncoder(**small),
        detr_decoder=SAM3DetrDecoder(image_shape=(size, size, 3), patch_size=14, num_queries=4,
                                     **small),
        mask_decoder=SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=8, num_heads=2))
    return SAM3PromptableConceptImageSegmenter(backbone=backbone) if task else backbone


def blip2_lm(seq2seq: bool = False):
    """Multimodal: a ViT, a Q-Former whose learned queries cross-attend to its patches, and a
    language model (OPT, or Flan-T5 for the seq2seq task) that reads the queries as a prefix."""
    models = _hub().models
    vision = models.BLIP2VisionEncoder(
        image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, use_patch_bias=True, use_class_token=True, use_mha_bias=True,
        use_mlp_bias=True, dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02)
    qformer = models.BLIP2QFormer(
        num_query_tokens=2, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        vision_dim=8, cross_attention_frequency=1, dropout=0.0, layer_norm_epsilon=1e-12)
    small = dict(vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=8,
                 intermediate_dim=16, num_query_tokens=2, qformer_hidden_dim=8)
    if seq2seq:
        language_model = models.BLIP2FlanT5(key_value_dim=4, dropout=0.0, **small)
    else:
        language_model = models.BLIP2CustomOPT(dropout=0.0, max_sequence_length=16, **small)
    backbone = models.BLIP2Backbone(vision_encoder=vision, qformer=qformer,
                                    language_model=language_model)
    task = models.BLIP2Seq2SeqLM if seq2seq else models.BLIP2CausalLM
    return task(backbone=backbone, preprocessor=None)


def flux_backbone():
    """Diffusion: image and text token streams with float position ids (one per RoPE axis),
    a pooled text vector, a timestep and a guidance strength."""
    return _hub().models.FluxBackbone(
        input_channels=4, hidden_size=16, mlp_ratio=2.0, num_heads=2, depth=1,
        depth_single_blocks=1, axes_dim=[2, 2, 4], theta=10000, use_bias=True,
        guidance_embed=True, image_shape=(None, 4), text_shape=(None, 8),
        image_ids_shape=(None, 3), text_ids_shape=(None, 3), y_shape=(8,))


def stable_diffusion_3(task: str = "ImageToImage"):
    """Diffusion: two CLIP text encoders (prompt and negative prompt), a VAE that encodes the
    image and decodes the latents, and an MMDiT run for ``num_steps`` steps (an int input)."""
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone

    models = _hub().models

    def clip(name):
        return models.CLIPTextEncoder(
            vocabulary_size=32, embedding_dim=8, hidden_dim=8, num_layers=1, num_heads=2,
            intermediate_dim=16, intermediate_output_index=0, max_sequence_length=8, name=name)

    levels = [32] * 4  # group norms of 32 groups; three halvings make the latent image / 8
    vae = VAEBackbone(encoder_num_filters=levels, encoder_num_blocks=[1] * 4,
                      decoder_num_filters=levels, decoder_num_blocks=[1] * 4, sample_channels=8)
    backbone = models.StableDiffusion3Backbone(
        mmdit_patch_size=2, mmdit_hidden_dim=8, mmdit_num_layers=1, mmdit_num_heads=2,
        mmdit_position_size=4, mmdit_qk_norm=None, mmdit_dual_attention_indices=None, vae=vae,
        clip_l=clip("clip_l"), clip_g=clip("clip_g"), latent_channels=4,
        image_shape=(16, 16, 3))
    return getattr(models, f"StableDiffusion3{task}")(backbone=backbone, preprocessor=None)


def mobilenetv5_backbone():
    """A vision backbone alone: an edge-residual and a universal-inverted-residual stage, and
    the multi-scale fusion adapter that resizes both to one resolution."""
    from keras_hub.src.models.mobilenetv5.mobilenetv5_builder import convert_arch_def_to_stackwise

    arch = [["er_r1_k3_s2_e1_c8"], ["uir_r1_a3_k3_s2_e2_c16"]]
    return _hub().models.MobileNetV5Backbone(
        **convert_arch_def_to_stackwise(arch), stem_size=8, num_features=8,
        image_shape=(32, 32, 3), use_msfa=True, msfa_indices=(-2, -1), msfa_output_resolution=4)


def lora_backbone():
    """LoRA: every base weight frozen, rank-2 adapters on the attention's query and value;
    each adapter's second factor starts at zero, so the first has a zero gradient at step 0."""
    backbone = _hub().models.GemmaBackbone(
        vocabulary_size=32, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, head_dim=4)
    backbone.enable_lora(2)
    return backbone


#: Tiny values for the constructor arguments transformer backbones share; a backbone whose
#: required arguments are all here is built from them (``generated_zoo``).
TINY = {
    "vocabulary_size": 32, "vocab_size": 32, "num_layers": 1, "num_heads": 2,
    "num_query_heads": 2, "num_key_value_heads": 1, "num_attention_heads": 2, "hidden_dim": 8,
    "intermediate_dim": 16, "embedding_dim": 8, "head_dim": 4, "head_size": 4, "num_experts": 4,
    "moe_intermediate_dim": 8, "shared_expert_intermediate_dim": 8,
    "shared_expert_intermediate_size": 8, "top_k": 1, "patch_size": 4, "image_size": 16,
    "num_layers_enc": 1, "num_layers_dec": 1, "hidden_size": 8, "filter_dim": 16,
    "encoder_num_layers": 1, "decoder_num_layers": 1, "encoder_num_heads": 2,
    "decoder_num_heads": 2, "vit_patch_size": 4, "vit_num_heads": 2, "vit_hidden_dim": 8,
    "vit_num_layers": 1,
}
#: Optional arguments that keep positional tables and images small when a class has them.
TINY_OPTIONAL = {"max_sequence_length": 16, "image_shape": (16, 16, 3)}
#: Per-class changes to ``TINY`` where a constructor's own checks need them.
TINY_PER_CLASS = {
    "GPTNeoXBackbone": {"hidden_dim": 16},  # rotary dims: hidden / heads * 0.25 must be even
    "MoonshineBackbone": {"hidden_dim": 16},  # its encoder MLP expects filter_dim features
}
#: Task constructor arguments beyond the backbone.
TASK_ARGUMENTS = {"num_classes": 3, "preprocessor": None}


def _required(cls) -> list[str]:
    import inspect

    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in ("self", "dtype") and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _tiny_backbone(cls):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: TINY[name] for name in _required(cls)}
    kwargs.update({k: v for k, v in TINY_OPTIONAL.items() if k in params})
    kwargs.update(TINY_PER_CLASS.get(cls.__name__, {}))
    return cls(**kwargs)


def _tiny_task(task_cls, backbone_cls):
    import inspect

    params = inspect.signature(task_cls.__init__).parameters
    kwargs = {k: v for k, v in TASK_ARGUMENTS.items() if k in params}
    return task_cls(backbone=_tiny_backbone(backbone_cls), **kwargs)


def generated_zoo() -> dict[str, Callable]:
    """Every keras-hub backbone whose required arguments are all in ``TINY``, and every task
    class built on one of them."""
    import inspect
    from functools import partial

    hub = _hub()
    from keras_hub.src.models.backbone import Backbone
    from keras_hub.src.models.task import Task

    classes = [getattr(hub.models, name) for name in dir(hub.models)]
    classes = [c for c in classes if inspect.isclass(c)]
    zoo = {}
    for backbone_cls in classes:
        if not issubclass(backbone_cls, Backbone) or backbone_cls is Backbone:
            continue
        if not _required(backbone_cls) or not all(n in TINY for n in _required(backbone_cls)):
            continue  # a base class (no arguments of its own), or one that needs sub-models
        zoo[backbone_cls.__name__] = partial(_tiny_backbone, backbone_cls)
        for task_cls in classes:
            extra = set(_required(task_cls)) - {"backbone", *TASK_ARGUMENTS}
            if (issubclass(task_cls, Task) and getattr(task_cls, "backbone_cls", None)
                    is backbone_cls and not extra):
                zoo[task_cls.__name__] = partial(_tiny_task, task_cls, backbone_cls)
    return zoo


HAND_BUILT: dict[str, Callable] = {
    "WhisperBackbone": whisper_backbone,
    "RetinaNetObjectDetector": retinanet_detector,
    "DFineObjectDetector": dfine_detector,
    "SAMImageSegmenter": sam_segmenter,
    "Gemma3CausalLM+vision": gemma3_vision_lm,
    "MixtralCausalLM": mixtral_lm,
    "T5Backbone": t5_backbone,
    "BartSeq2SeqLM": bart_seq2seq,
    "PARSeqCausalLM": parseq_lm,
    "Gemma3nBackbone+vision+audio": gemma3n,
    "Gemma3nBackbone+vision": lambda: gemma3n(audio=False),
    "Gemma3nBackbone+audio": lambda: gemma3n(vision=False),
    "Gemma4Backbone+vision+audio": gemma4,
    "SAM3PromptableConceptBackbone": sam3_backbone,
    "SAM3PromptableConceptImageSegmenter": lambda: sam3_backbone(task=True),
    "Gemma4Backbone+vision": lambda: gemma4(audio=False),
    "Gemma4Backbone+audio": lambda: gemma4(vision=False),
    "BLIP2CausalLM": blip2_lm,
    "BLIP2Seq2SeqLM": lambda: blip2_lm(seq2seq=True),
    "FluxBackbone": flux_backbone,
    "StableDiffusion3ImageToImage": stable_diffusion_3,
    "StableDiffusion3Inpaint": lambda: stable_diffusion_3("Inpaint"),
    "MobileNetV5Backbone": mobilenetv5_backbone,
    "GemmaBackbone+lora": lora_backbone,
}


def full_zoo() -> dict[str, Callable]:
    """The generated zoo, with the hand-built composites (their entries win)."""
    return {**generated_zoo(), **HAND_BUILT}
