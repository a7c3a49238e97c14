"""Hand-written explanations for the settings that matter most and for every wizard step.

Each entry gives "interactions" and "watch for" texts, and a beginner's "what" where the
description's first sentence would not say what the setting is for; a tuple holds (beginner,
intermediate, advanced) versions, a plain string serves all three. ``advisor.explain`` adds generated detail
(bounds, defaults, the validation rules that read the field) on top.
"""

from __future__ import annotations

Text = str | tuple[str, str, str]

FIELDS: dict[str, dict[str, Text]] = {
    "model.arch": {
        "interactions": (
            "Decides the native size, how much memory you need and which settings apply.",
            "Sets the native resolution (512 SD1.5, 1024 SDXL/Flux), the noise schedule "
            "(DDPM vs flow matching) and which options exist (conv ranks for SD, no text-encoder "
            "LoRA for Flux).",
            "Flux is a 12B rectified-flow transformer: flowmatch scheduler/sampler, shift "
            "timesteps, no v-pred, no conv layers; SDXL has two text encoders and a VAE that "
            "overflows in fp16.",
        ),
        "watch": (
            "Flux needs much more memory: about 17 GB even with 8-bit weights.",
            "Flux bf16 needs 30+ GB; with 8-bit weights ~17 GB at 1024 px, NF4 ~12 GB.",
            "Predicted peaks: SD1.5 ~6 GB (bs2, 512), SDXL ~8 GB minimal, Flux 9-35 GB by "
            "quantization and text-encoder residency.",
        ),
    },
    "model.quantize": {
        "interactions": (
            "Makes the big base model smaller in memory; your LoRA itself stays precise.",
            "Works with qtype; combine with cached text embeddings and low_vram for Flux on "
            "12-16 GB. NF4 wants AdamW8bit and no torch.compile.",
            "Weights stored as float8/int8 (~1 byte) or NF4/FP4 (~0.56 byte incl. scales) and "
            "dequantized per layer; LoRA weights stay fp32. Quantizing on load materialises "
            "fp32 weights in RAM (~50 GB for Flux).",
        ),
        "watch": (
            "Generate with the same quantization later, or small changes get lost.",
            "Quantizing Flux on load needs ~50 GB of system RAM; NF4 steps are ~2x slower.",
            "int8/NF4/FP4 need bitsandbytes on NVIDIA; NF4 costs ~0.5 s/step fixed "
            "dequantization on a 4090 plus ~1.3x compute.",
        ),
    },
    "network.linear": {
        "interactions": (
            "Rank and alpha work together: alpha / rank sets how strong each update is.",
            "Higher rank = more capacity, bigger files and more overfitting risk; raise steps "
            "or lower LR with it. Prodigy wants alpha = rank.",
            "Params = rank × (in + out) per adapted layer: SD1.5 ~199k/rank, SDXL ~1.45M/rank, "
            "Flux ~1.63M/rank on attention projections; optimizer state scales with it.",
        ),
        "watch": (
            "8-32 is plenty for most LoRAs; very high ranks copy your images.",
            "Rank ≥ 64 on fewer than 20 images memorises them.",
            "File size (fp16) ≈ 2 bytes × rank × units: Flux rank 16 ≈ 52 MB.",
        ),
    },
    "network.linear_alpha": {
        "interactions": (
            "Scales the LoRA's effect together with the rank.",
            "Scale = alpha / rank multiplies every update, like a learning-rate factor.",
            "Changing alpha at fixed LR changes the effective LR by alpha/rank; LoKr wants "
            "alpha ≈ √dim; Prodigy wants alpha = rank.",
        ),
        "watch": (
            "Alpha above the rank makes training harsher.",
            "alpha = rank/2 is gentler; alpha > rank burns faster.",
            "Keep alpha/rank fixed when you sweep ranks, or the LR sweep is confounded.",
        ),
    },
    "train.lr": {
        "interactions": (
            "Works with batch size and alpha: bigger batches can take a bit more.",
            "Doubling the batch: double the LR or add epochs (the advisor uses √ scaling up to "
            "the top of the band). Lion wants 3-10x less, Prodigy 1.0.",
            "Effective step = LR × schedule factor × alpha/rank; text encoder uses "
            "text_encoder_lr (default half).",
        ),
        "watch": (
            "Too high burns images (oversaturated, noisy); too low learns nothing.",
            "Typical AdamW8bit: SD1.5 2e-4-5e-4, SDXL 1e-4-3e-4, Flux 1e-4.",
            "Watch loss_smoothed and previews: plateau early → lower; no change by 30% of "
            "steps → higher.",
        ),
    },
    "train.steps": {
        "interactions": (
            "Steps × batch ÷ images = how often each image is seen (repeats).",
            "repeats per image = steps × batch × accumulation / images; bucket-aware when sizes "
            "are known. Warmup and sampling intervals follow the steps.",
            "Bucket-aware: Σ_buckets ceil(n_b / batch) per epoch ÷ accumulation; reg images "
            "double it.",
        ),
        "watch": (
            "More is not always better: too many steps overfit.",
            "Person 80-120 repeats, character 50-100, style 30-60; > 10,000 steps is almost "
            "always a mistake.",
            "Flux DiTs: 500-4000 steps (2000 typical).",
        ),
    },
    "train.batch_size": {
        "interactions": (
            "Bigger batches use more memory and need fewer steps.",
            "Memory grows ~linearly with batch (activations); effective batch = batch × "
            "accumulation × processes. Buckets: a batch never mixes aspect ratios.",
            "Seed formula: 512 px → VRAM/3 (4-16), 768 → VRAM/4, 1024 → VRAM/6; then capped by "
            "the VRAM model. Flux prior: batch 1.",
        ),
        "watch": (
            "If training runs out of memory, lower the batch first.",
            "Many small buckets leave batches half full; the dataset must hold batch × "
            "accumulation images.",
            "auto_scale_batch_size changes the effective batch during warmup.",
        ),
    },
    "train.optimizer": {
        "interactions": (
            "Decides how weights change; the learning rate depends on it.",
            "Prodigy → lr 1.0 and alpha = rank; Lion → 3-10x smaller LR; Adafactor → least memory.",
            "State bytes/param: AdamW 8, AdamW8bit ~2, Adafactor ~0.5, Prodigy 16, Lion 4.",
        ),
        "watch": (
            "AdamW8bit is the safe choice.",
            "bitsandbytes (8-bit) needs NVIDIA/AMD or CPU; Apple uses AdamW.",
            "Under 4096 elements bitsandbytes keeps 32-bit state (tiny LoRAs never use 8-bit).",
        ),
    },
    "train.gradient_checkpointing": {
        "interactions": (
            "Saves a lot of memory for some extra time.",
            "Activation memory drops ~4-10x; steps take ~20-30% longer.",
            "Adds one recomputed forward per step (3 passes instead of 2).",
        ),
        "watch": (
            "Keep it on unless you have plenty of VRAM.",
            "Turn it off only when the run fits comfortably without it.",
            "The advisor suggests turning it off when the prediction stays under 70% of VRAM.",
        ),
    },
    "train.cache_text_embeddings": {
        "interactions": (
            "Encodes captions once so the text encoder can leave the GPU.",
            "Not with tag shuffling, token dropout or text-encoder training; caption dropout "
            "is fine (the empty caption is cached too). Needed for unload_text_encoder.",
            "Cached per caption: Flux T5 outputs are ~4 MB per caption (512 × 4096 × 2 bytes).",
        ),
        "watch": (
            "Turn it on for SDXL and Flux when you do not shuffle tags.",
            "With unload_text_encoder it frees ~9.5 GB on Flux (T5 in bf16).",
            "Sample prompts are encoded before the encoder is freed.",
        ),
    },
    "datasets.0.cache_latents": {
        "interactions": (
            "Encodes each image once, so steps are faster.",
            "Random crops, zooms and colour/blur/rotation augmentations turn it off (the "
            "pixels change); flips are cached per variant.",
            "Latent = C × (size/8)² × 2 bytes: SD 32 KB at 512 px, Flux 512 KB at 1024 px.",
        ),
        "watch": (
            "Do not combine with random crops.",
            "In-memory caches must fit in RAM (seed rule: 70% of free RAM after 8 GB for the OS).",
            "Disk caches are reused across runs when image, bucket and model match.",
        ),
    },
    "datasets.0.flip_x": {
        "interactions": (
            "Mirrors images for more variety.",
            "Doubles the latent cache (cached per variant).",
            "The flip is part of the cache key; masks flip with the image.",
        ),
        "watch": (
            "Off for faces, text and logos: they are not symmetric.",
            "Good for styles and symmetric objects.",
            "A mirrored parting or mole becomes part of the identity.",
        ),
    },
    "datasets.0.resolution": {
        "interactions": (
            "Bigger images need much more memory and time.",
            "Memory and time grow with pixels (Flux: tokens = (size/16)² + 512).",
            "Several sizes train multi-resolution; buckets are built per size.",
        ),
        "watch": (
            "Use the model's native size (512 SD1.5, 1024 SDXL/Flux).",
            "Flux 512 → 1024 px: ~2.5x step time and +3 GB of activations.",
            "Sizes must be multiples of 8 (SD) or 16 (Flux).",
        ),
    },
    "datasets.0.trigger_word": {
        "interactions": (
            "The word that calls up what you trained.",
            "Prepended to captions that lack it; '[trigger]' in prompts is replaced; "
            "preservation swaps it for the class word.",
            "Kept by token dropout; keep_tokens 1 keeps it first when shuffling.",
        ),
        "watch": (
            "Use a rare word ('ohwx'), not a real one ('woman').",
            "A common word mixes your subject with what the model already knows.",
            "Tokenizers split rare words into pieces; short nonsense tokens work best.",
        ),
    },
    "train.train_text_encoder": {
        "interactions": (
            "Also teaches the text encoder your trigger word.",
            "Cannot be combined with cached text embeddings; uses text_encoder_lr.",
            "CLIP-L LoRA ≈ 74k params/rank; SDXL adds bigG (328k/rank).",
        ),
        "watch": (
            "Helps SD1.5; usually off for SDXL; not available for Flux.",
            "The text encoder overfits fast: keep its LR at half the U-Net's or less.",
            "SDXL LoRAs generalise better U-Net only.",
        ),
    },
    "train.dtype": {
        "interactions": (
            "The number format used while training.",
            "bf16 on Ampere+/RDNA3/M2+, fp16 on older GPUs, fp32 on CPU.",
            "fp32 doubles activation memory and is ~2.5x slower on tensor cores.",
        ),
        "watch": (
            "fp16 with SDXL's VAE or with Flux gives black images.",
            "SDXL in fp16: set vae_dtype fp32. Flux: bf16 or fp32 only.",
            "fp16 on CPU crashes in PyTorch.",
        ),
    },
    "train.diff_output_preservation": {
        "interactions": (
            "Keeps the rest of the class (e.g. other people) unchanged.",
            "Needs a trigger word and a class word; adds one forward pass per step.",
            "Trains the LoRA to leave the class prompt's prediction equal to the base model's.",
        ),
        "watch": (
            "Use the class your subject is: 'woman', 'dog', 'car'.",
            "About +30% step time.",
            "A wrong class word preserves the wrong thing.",
        ),
    },
    "model.layer_offloading": {
        "interactions": (
            "Keeps part of the model in normal RAM to save VRAM.",
            "Percent of layers in RAM: ≈ -20% VRAM / +15% time at 25%, -45% / +30% at 50%, "
            "-65% / +50% at 75%.",
            "Needs the offloaded weights in RAM plus two blocks in flight on the GPU.",
        ),
        "watch": (
            "Much slower; use it only when nothing else fits.",
            "Try quantization and cached text embeddings first.",
            "PCIe bandwidth bounds the cost; it shrinks at larger sizes.",
        ),
    },
    "runtime.num_processes": {
        "interactions": (
            "Trains on several GPUs (or CPU processes) at once, each on its own share of the "
            "images; their gradients are averaged every step.",
            "Effective batch = batch × processes × accumulation (logged as "
            "effective_batch_size): fewer steps for the same repeats; scale the LR by about √ of "
            "the batch growth.",
            "Runs through accelerate launch; memory is per GPU. Only the first process logs, "
            "samples and saves.",
        ),
        "watch": (
            "You need that many GPUs (on a CPU, that many cores: on 2 shared cores 2 processes "
            "are barely faster than 1).",
            "Keep repeats per image, not steps, constant when adding GPUs.",
            "Each process loads its own copy of the model into RAM while loading.",
        ),
    },
    "validation.holdout": {
        "what": (
            "Images set aside to check the LoRA on pictures it never trained on (0 = none). Their "
            "validation loss falls while the LoRA learns and rises once it starts copying its "
            "training images, so it shows when to stop and which saved LoRA is best."
        ),
        "interactions": (
            "The held-out images are never trained on, so an epoch has fewer steps: the Dataset "
            "card and the Training step count without them. 'Validation every' sets how often "
            "they are scored.",
            "Taken from the datasets (never from regularisation images); every epoch and the "
            "repeats per image count without them. Either this or a validation folder, not both.",
            "The first holdout distinct images by content hash (trainer.engine.validation), so "
            "the same images whatever the seed or file order; the advisor estimates the split "
            "across datasets in proportion to their image counts.",
        ),
        "watch": (
            "Hold out a few (2-5 of 20 or more images): with very few images each one is needed "
            "for training.",
            "The validation loss is noisy on 1-2 images; 4+ images give a usable curve.",
            "It must leave images to train on; the check before launch says when it does not.",
        ),
    },
    "validation.folder_path": {
        "what": (
            "A folder of your own validation images, used instead of held-out ones: the LoRA is "
            "scored on them and never trained on them."
        ),
        "interactions": (
            "Either this or 'Validation images held out', not both. 'Validation every' sets how "
            "often they are scored."
        ),
        "watch": (
            "Pictures like your training images but not the same ones, with captions beside them "
            "as in a dataset; images that are also in a dataset leave training."
        ),
    },
    "validation.every": {
        "what": (
            "How often the validation loss is computed, in steps. 0 = only when a LoRA is saved "
            "and at the end of the run."
        ),
        "interactions": (
            "Does nothing without validation images (held out or a folder). The loss is always "
            "computed at each LoRA save (Save & logging) and at the end, so every saved LoRA has "
            "a value to compare."
        ),
        "watch": (
            "Each time costs validation images × draws forward passes: a small number on many "
            "images slows training down."
        ),
    },
    "validation.draws": {
        "what": (
            "How many noise draws each validation image is scored with: more draws give a "
            "steadier validation loss."
        ),
        "interactions": "Each validation costs validation images × draws forward passes.",
        "watch": "4 suits most runs; raise it when the validation loss jumps from point to point.",
    },
    "validation.seed": {
        "what": (
            "The seed of the validation noise and timesteps: the same seed scores every run alike."
        ),
        "interactions": (
            "Independent of the training seed: another training seed does not change what the "
            "validation loss measures."
        ),
        "watch": "Keep it the same across the runs you want to compare.",
    },
}

STEPS: dict[str, dict[str, Text]] = {
    "model": {
        "interactions": "The model decides memory needs, native size and which options exist.",
        "watch": "Flux needs far more memory than SDXL, SDXL more than SD1.5.",
    },
    "quantization": {
        "interactions": (
            "Smaller weights leave room for bigger batches or sizes.",
            "Quantization trades VRAM for a little quality and some speed; it interacts with "
            "the optimizer (NF4 → AdamW8bit) and compile.",
            "Storage per weight: float8/int8 ~1 byte, NF4 ~0.56; quantizing on load needs fp32 "
            "weights in RAM.",
        ),
        "watch": "Generate with the same quantization later; Flux quantization needs ~50 GB RAM.",
    },
    "network": {
        "interactions": "Rank, alpha and LR together set how fast and how much the LoRA learns.",
        "watch": "High ranks on few images memorise them; alpha > rank burns faster.",
    },
    "dataset": {
        "interactions": "Images × repeats decide steps per epoch; captions decide what is learned.",
        "watch": "Rare trigger word, one caption file per image, no sub-folders (not scanned).",
    },
    "resolution": {
        "interactions": (
            "Size drives memory and time; augmentations decide whether latents can be cached.",
            "Buckets keep aspect ratios; flips double the cache; random crops turn caching off.",
            "Bucket arithmetic: Σ ceil(n_b/batch) per epoch; size multiples of 8 (16 for Flux).",
        ),
        "watch": "Native size for quality; no flips for faces; caching and random crops clash.",
    },
    "memory": {
        "interactions": (
            "Batch, accumulation and caching decide how much memory a step needs.",
            "Seed formulas: batch by VRAM and size, cache in RAM if it fits 70% of free RAM, "
            "prefetch by disk type (HDD 3, SSD 2, NVMe 1), workers = RAM/8 up to cores.",
            "Peak = weights + resident encoders + LoRA/optimizer + activations(batch, size, "
            "checkpointing) + ~0.6 GB context + 5% slack.",
        ),
        "watch": "Out of memory: lower the batch, keep checkpointing, cache text and latents.",
    },
    "optimizer": {
        "interactions": "Optimizer and learning rate go together; the schedule shapes the LR.",
        "watch": "Prodigy → lr 1.0; Lion → smaller LR; warmup about 5% of steps.",
    },
    "regularization": {
        "interactions": "Preservation and dropout keep the base model's knowledge at some cost.",
        "watch": "Preservation needs a class word and costs ~30% time per pass.",
    },
    "training": {
        "interactions": "Steps and repeats per image decide how much is learned.",
        "watch": "> 10,000 steps is almost always a mistake; min-SNR 5 (SD1.5) / 8 (SDXL).",
    },
    "sampling": {
        "interactions": "Previews show progress; each costs sampling time.",
        "watch": "Use '[trigger]' in prompts and the sampler you will generate with.",
    },
    "save": {
        "interactions": "Checkpoints let you resume and pick the best step; they cost disk.",
        "watch": "MLflow keeps every checkpoint's LoRA; keep-count only rotates local files.",
    },
    "advanced": {
        "interactions": "Offloading, compile, attention and devices trade speed for memory.",
        "watch": "Offloading is slow; flash/xformers need NVIDIA; no compile on 4-bit weights.",
    },
}
