"""``update_weights_from_disk``: buckets are written as safetensors shards of an HF directory (with the
served model's config and tokenizer files), which every server then loads. The directory must be
visible to the servers (``disk_dir`` on a shared file system for remote ones); it is removed after."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

from safetensors.torch import save_file

from harness.rollout.transports.base import WeightTransport, register_transport

SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt")


@register_transport("disk")
class DiskTransport(WeightTransport):
    directory = None

    def open(self, servers, tp_sizes, version):
        super().open(servers, tp_sizes, version)
        self.directory = tempfile.mkdtemp(prefix=f"weights-v{version}-", dir=self.config.disk_dir)
        self.weight_map = {}

    def send(self, bucket, version):
        file = f"model-{len(set(self.weight_map.values())):05d}.safetensors"
        save_file({name: tensor.detach().cpu().contiguous() for name, tensor in bucket},
                  os.path.join(self.directory, file))
        self.weight_map.update({name: file for name, _ in bucket})

    def close(self, version):
        try:
            with open(os.path.join(self.directory, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": self.weight_map}, f)
            for file in SIDE_FILES:
                source = os.path.join(self.config.model_path or "", file)
                if os.path.exists(source):
                    shutil.copy2(source, self.directory)
            with ThreadPoolExecutor(len(self.servers)) as pool:
                answers = [pool.submit(server.ok, "/update_weights_from_disk",
                                       {"model_path": self.directory, "weight_version": version,
                                        "flush_cache": False}, self.config.update_timeout_s)
                           for server in self.servers]
                for answer in answers:
                    answer.result()
        finally:
            self.reset()

    def reset(self):
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
