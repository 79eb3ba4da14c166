"""TEST SUPPORT, CPU ONLY: a stand-in for SGLang's CUDA kernel package (see ../README.md).

One real function; any other attribute is a placeholder that raises when called. Submodules do not
exist (importing one raises ImportError), which is what SGLang's own fallbacks expect.
"""

__version__ = "0.0.0+cpu-stand-in"


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
                                 out_cache_loc, max_ctx=None):
    """For each request i: ``req_to_token[req_pool_indices[i], start:end] = out_cache_loc[pos:pos+n]``
    with the cache locations of all requests laid out back to back in ``out_cache_loc``."""
    position = 0
    for index, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        count = end - start
        req_to_token[index, start:end] = out_cache_loc[position:position + count].to(req_to_token.dtype)
        position += count


def _placeholder(qualified_name):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(
            f"{qualified_name} is not available: sgl_kernel here is the CPU test stand-in "
            "(tests/support/sglang_cpu), which implements only assign_req_to_token_pool_cpu")
    unavailable.__name__ = qualified_name.rsplit(".", 1)[-1]
    unavailable.__qualname__ = qualified_name
    return unavailable


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _placeholder(f"{__name__}.{name}")


__all__ = ["assign_req_to_token_pool_cpu"]
