#pragma once
// The `data.pkl` of a torch.save zip checkpoint, read without executing anything.
//
// torch.save pickles the state dict (protocol 2 by default) with every tensor as
//   torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                                   backward_hooks[, metadata])
// (or _rebuild_tensor_v3(..., backward_hooks, dtype[, metadata]) for dtypes without a legacy
// storage class, e.g. float8_e4m3fn) and every storage as a persistent id
//   ('storage', torch.<Type>Storage | torch.storage.UntypedStorage, key, location, numel)
// whose bytes are the archive entry `<archive>/data/<key>` (numel counts elements of a typed
// storage, bytes of an untyped one).
//
// This is a stack machine for exactly that subset of the pickle protocol (opcodes of protocols
// 2-5 that such a pickle can hold: PROTO, FRAME, GLOBAL, STACK_GLOBAL, MARK, the tuple, list and
// dict builders, the int, float, string, bool and None pushes, memo get/put, BINPERSID, REDUCE,
// BUILD, NEWOBJ, STOP). It never imports or calls anything: GLOBAL may name only the rebuild
// functions above, torch._utils._rebuild_parameter, collections.OrderedDict, the torch storage
// classes and torch dtypes; REDUCE may apply only those functions (and OrderedDict() with no
// arguments). Anything else (another global, another opcode) is refused with a fisdit::Error.
// All objects live in one arena, so reference cycles (a list appended to itself) cost nothing
// and nothing recurses over the object graph.
//
// The result is the state dict: the top-level dict (a dict or OrderedDict), or the dict under
// its "state_dict", "model" or "module" key when it has one (repeatedly: {"model": {"state_dict":
// ...}} works too). Its keys must be strings; its tensor values are returned in insertion order;
// values that are None, bools, numbers or strings are skipped; any other value is refused.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace fisdit {

struct TorchStorage {
  std::string key;             // archive entry <archive>/data/<key>
  std::optional<DType> dtype;  // element type of a typed storage; nullopt for UntypedStorage
  uint64_t numel = 0;          // elements (typed) or bytes (untyped), as the persistent id says
  uint64_t nbytes() const { return dtype ? numel * dtype_size(*dtype) : numel; }
};

struct TorchTensor {
  std::string name;             // state dict key
  size_t storage = 0;           // index into TorchStateDict::storages
  DType dtype = DType::F32;     // element type of the tensor
  int64_t storage_offset = 0;   // in elements of `dtype`
  Shape shape;                  // size
  std::vector<int64_t> stride;  // in elements, one per dimension
};

struct TorchStateDict {
  std::vector<TorchStorage> storages;  // each key once
  std::vector<TorchTensor> tensors;    // in state dict order
  std::vector<std::string> unwrapped;  // the wrapper keys descended through ("state_dict", ...)
};

// Interprets `size` bytes of pickle. Errors are thrown as fisdit::Error prefixed with `where`
// (e.g. "<file>: data.pkl") and say at which byte offset and opcode the pickle was refused.
// Sizes, strides and offsets are returned as the pickle gives them (non-negative, otherwise
// unchecked): the caller checks them against the storages.
TorchStateDict read_torch_pickle(const uint8_t* data, size_t size, const std::string& where);

}  // namespace fisdit
