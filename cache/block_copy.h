// BlockCopy: one copy-on-write instruction. The block manager (cache/block_manager.h) emits it
// when a sequence is about to write into a block it shares; the KV storage (cache/kv_cache.h)
// executes it, copying the block's keys and values in every layer of the group, before the step
// that writes. Plain value.
#pragma once

namespace earnserve {

struct BlockCopy {
  int group = 0;
  int src_block = 0;
  int dst_block = 0;

  bool operator==(const BlockCopy&) const = default;
};

}  // namespace earnserve
