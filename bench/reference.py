"""transformers' Siglip2 towers (SDPA attention) as one more benchmark configuration: the reference
that bench/bench.py, bench/http_bench.py and bench/gpu_check.py compare sigserve with. Test and
benchmark code only: transformers is never a sigserve runtime dependency."""

from __future__ import annotations

import warnings


class TransformersRunner:
    """encode_images / encode_texts like a sigserve backend, on the same checkpoint folder."""

    def __init__(self, folder, torch_dtype=None, device: str = "cpu"):
        import torch
        from transformers import Siglip2VisionModel
        from transformers.utils import logging

        logging.set_verbosity_error()
        self.torch, self.device, self.dtype = torch, device, torch_dtype or torch.float32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.vision = Siglip2VisionModel.from_pretrained(folder, attn_implementation="sdpa",
                                                             dtype=self.dtype).to(device).eval()
        self._folder, self._text = folder, None

    def encode_images(self, pv, mask, shapes, with_features=False):
        from sigserve.images import normalize

        t = self.torch
        with t.inference_mode():  # normalised here, as our backends do (transformers' processor would)
            out = self.vision(pixel_values=t.from_numpy(normalize(pv)).to(self.device, self.dtype),
                              pixel_attention_mask=t.from_numpy(mask).to(self.device),
                              spatial_shapes=t.from_numpy(shapes).to(self.device))
        return out.pooler_output.float().cpu().numpy(), None

    def encode_texts(self, ids):
        from transformers import Siglip2TextModel

        if self._text is None:
            self._text = Siglip2TextModel.from_pretrained(self._folder, attn_implementation="sdpa",
                                                          dtype=self.dtype).to(self.device).eval()
        with self.torch.inference_mode():
            out = self._text(input_ids=self.torch.from_numpy(ids).to(self.device))
        return out.pooler_output.float().cpu().numpy()


def peak_rss_mb(folder: str) -> float:
    """Peak RSS of a fresh process that loads transformers' Siglip2Model and embeds one image."""
    from sigserve.cli.bench import rss_of

    return rss_of(
        "import torch, warnings\nwarnings.simplefilter('ignore')\n"
        "from transformers import Siglip2Model\n"
        f"m = Siglip2Model.from_pretrained({folder!r}).eval()\n"
        "with torch.inference_mode(): m.vision_model(pixel_values=torch.randn(1, 256, 768), "
        "pixel_attention_mask=torch.ones(1, 256, dtype=torch.int32), spatial_shapes=torch.tensor([[16, 16]]))\n"
        "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024)\n"
    )
