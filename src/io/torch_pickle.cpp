#include "io/torch_pickle.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

namespace {

// Opcodes (CPython Lib/pickletools.py names).
enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

enum class Kind : uint8_t {
  None,
  Bool,
  Int,
  Float,
  String,
  Bytes,
  Tuple,
  List,
  Dict,
  Global,
  Storage,
  Tensor
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::Bytes:
      return "bytes";
    case Kind::Tuple:
      return "tuple";
    case Kind::List:
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Global:
      return "global";
    case Kind::Storage:
      return "storage";
    case Kind::Tensor:
      return "tensor";
  }
  return "?";
}

// The only globals a state dict pickle needs.
enum class Callable : uint8_t {
  OrderedDict,
  RebuildTensorV2,
  RebuildTensorV3,
  RebuildParameter,
  StorageClass,
  DTypeObject
};

struct Object {
  Kind kind = Kind::None;
  Callable callable = Callable::OrderedDict;  // Global
  std::optional<DType> dtype;                 // Global StorageClass (nullopt: untyped), DTypeObject
  int64_t integer = 0;                        // Bool, Int
  double real = 0;                            // Float
  std::string text;                           // String, Bytes; Global: "module.name"
  std::vector<uint32_t> items;                // Tuple, List; Dict: key, value, key, value, ...
  size_t index = 0;                           // Storage: storages[index]; Tensor: tensors[index]
};

// Legacy typed storage classes (torch/storage.py) and the element type of each.
struct NamedDType {
  std::string_view name;
  DType dtype;
};
constexpr NamedDType kStorageClasses[] = {
    {"FloatStorage", DType::F32},     {"DoubleStorage", DType::F64}, {"HalfStorage", DType::F16},
    {"BFloat16Storage", DType::BF16}, {"LongStorage", DType::I64},   {"IntStorage", DType::I32},
    {"ShortStorage", DType::I16},     {"CharStorage", DType::I8},    {"ByteStorage", DType::U8},
    {"BoolStorage", DType::Bool},
};
// torch dtypes as pickled (their canonical attribute names in the torch module).
constexpr NamedDType kDTypes[] = {
    {"float32", DType::F32},
    {"float64", DType::F64},
    {"float16", DType::F16},
    {"bfloat16", DType::BF16},
    {"float8_e4m3fn", DType::F8_E4M3},
    {"float8_e5m2", DType::F8_E5M2},
    {"int64", DType::I64},
    {"int32", DType::I32},
    {"int16", DType::I16},
    {"int8", DType::I8},
    {"uint8", DType::U8},
    {"bool", DType::Bool},
};

// torch dtypes fisdit has no element type for (named in the error instead of "refused global").
constexpr std::string_view kUnsupportedDTypes[] = {
    "uint16",     "uint32",          "uint64",          "complex32",      "complex64",
    "complex128", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "qint8",      "quint8",          "qint32",          "quint4x2",       "quint2x4"};

// Object counts of real state dicts are ~20 per tensor; this allows 200k tensors and bounds the
// memory a hostile pickle can make the reader spend.
constexpr size_t kMaxObjects = 4u << 20;
constexpr size_t kMaxGlobalLine = 256;
constexpr int kMaxUnwrap = 4;

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& where)
      : data_(data), size_(size), where_(where) {}

  TorchStateDict run() {
    const uint32_t root = interpret();
    return state_dict(root);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    char at[96];
    std::snprintf(at, sizeof at, " (at byte %zu, opcode 0x%02x)", op_pos_, op_);
    throw Error(where_ + ": " + what + at);
  }
  [[noreturn]] void fail_content(const std::string& what) const {
    throw Error(where_ + ": " + what);
  }

  // --- input ---
  void need(size_t n) const {
    if (size_ - pos_ < n)
      fail("pickle ends " + std::to_string(n - (size_ - pos_)) +
           " bytes early (truncated data.pkl)");
  }
  uint64_t read_le(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{data_[pos_ + i]} << (8 * i);
    pos_ += n;
    return v;
  }
  std::string read_bytes(uint64_t n) {
    if (n > size_ - pos_)
      fail("string of " + std::to_string(n) + " bytes runs past the end of the pickle (" +
           std::to_string(size_ - pos_) + " left: truncated data.pkl)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  std::string read_line() {
    const size_t limit = std::min(size_ - pos_, kMaxGlobalLine + 1);
    const void* nl = std::memchr(data_ + pos_, '\n', limit);
    if (!nl) fail("GLOBAL name is not a newline-terminated line of at most 256 bytes");
    const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (data_ + pos_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n + 1;
    return s;
  }

  // --- objects ---
  uint32_t make(Object o) {
    if (objects_.size() >= kMaxObjects)
      fail("pickle builds more than " + std::to_string(kMaxObjects) + " objects");
    objects_.push_back(std::move(o));
    return static_cast<uint32_t>(objects_.size() - 1);
  }
  uint32_t make(Kind kind) {
    Object o;
    o.kind = kind;
    return make(std::move(o));
  }
  uint32_t make_int(int64_t v, Kind kind = Kind::Int) {
    Object o;
    o.kind = kind;
    o.integer = v;
    return make(std::move(o));
  }
  uint32_t make_text(std::string s, Kind kind = Kind::String) {
    Object o;
    o.kind = kind;
    o.text = std::move(s);
    return make(std::move(o));
  }
  Object& at(uint32_t id) { return objects_[id]; }

  void push(uint32_t id) { stack_.push_back(id); }
  uint32_t pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back()))
      fail(stack_.empty() ? "pops an empty stack" : "pops past a MARK");
    const uint32_t id = stack_.back();
    stack_.pop_back();
    return id;
  }
  uint32_t top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back()))
      fail("needs an object on the stack, but there is none above the MARK");
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail("needs a MARK, but none is open");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  uint32_t make_tuple(std::vector<uint32_t> items) {
    Object o;
    o.kind = Kind::Tuple;
    o.items = std::move(items);
    return make(std::move(o));
  }

  void memo_put(uint64_t index) {
    if (stack_.empty()) fail("memoizes an empty stack");
    memo_[index] = stack_.back();
  }
  void memo_get(uint64_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) fail("reads memo entry " + std::to_string(index) + ", never stored");
    push(it->second);
  }

  void set_items(uint32_t dict, const std::vector<uint32_t>& kv) {
    if (at(dict).kind != Kind::Dict)
      fail(std::string("sets items of a ") + kind_name(at(dict).kind) + ", not a dict");
    if (kv.size() % 2) fail("sets items from an odd number of objects");
    auto& items = at(dict).items;
    items.insert(items.end(), kv.begin(), kv.end());
  }
  void append_items(uint32_t list, const std::vector<uint32_t>& values) {
    if (at(list).kind != Kind::List)
      fail(std::string("appends to a ") + kind_name(at(list).kind) + ", not a list");
    auto& items = at(list).items;
    items.insert(items.end(), values.begin(), values.end());
  }

  uint32_t global(const std::string& module, const std::string& name) {
    Object o;
    o.kind = Kind::Global;
    o.text = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      o.callable = Callable::OrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      o.callable = Callable::RebuildTensorV2;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v3") {
      o.callable = Callable::RebuildTensorV3;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      o.callable = Callable::RebuildParameter;
    } else if ((module == "torch.storage" || module == "torch") && name == "UntypedStorage") {
      o.callable = Callable::StorageClass;
    } else if (module == "torch") {
      bool known = false;
      for (const auto& s : kStorageClasses)
        if (s.name == name) {
          o.callable = Callable::StorageClass;
          o.dtype = s.dtype;
          known = true;
        }
      for (const auto& d : kDTypes)
        if (d.name == name) {
          o.callable = Callable::DTypeObject;
          o.dtype = d.dtype;
          known = true;
        }
      if (!known) {
        if (name.size() > 7 && name.substr(name.size() - 7) == "Storage")
          fail("storage type " + squoted(o.text) + " is not supported");
        for (std::string_view other : kUnsupportedDTypes)
          if (name == other)
            fail("tensor dtype " + squoted(o.text) +
                 " is not supported (float32/64, float16, bfloat16, float8_e4m3fn/e5m2, int8-64, "
                 "uint8 and bool are)");
        refuse_global(o.text);
      }
    } else {
      refuse_global(o.text);
    }
    return make(std::move(o));
  }
  [[noreturn]] void refuse_global(const std::string& qualified) const {
    fail("refuses the global " + squoted(qualified) +
         ": only plain tensors of a state dict can be read (fisdit never runs code from a "
         "checkpoint; re-save the state dict with torch.save(model.state_dict()))");
  }

  uint32_t persistent_load(uint32_t pid_id) {
    const Object& pid = at(pid_id);
    const auto& it = pid.items;
    if (pid.kind != Kind::Tuple || it.size() != 5 || at(it[0]).kind != Kind::String ||
        at(it[0]).text != "storage")
      fail("persistent id is not ('storage', type, key, location, numel)");
    const Object& type = at(it[1]);
    if (type.kind != Kind::Global || type.callable != Callable::StorageClass)
      fail("persistent id names no storage type");
    if (at(it[2]).kind != Kind::String || at(it[3]).kind != Kind::String ||
        at(it[4]).kind != Kind::Int || at(it[4]).integer < 0)
      fail("persistent id is not ('storage', type, key: str, location: str, numel: int >= 0)");
    TorchStorage s{at(it[2]).text, type.dtype, static_cast<uint64_t>(at(it[4]).integer)};
    if (s.dtype && s.numel > (uint64_t{1} << 62) / dtype_size(*s.dtype))
      fail("storage " + squoted(s.key) + " has an implausible size");
    size_t index;
    if (const auto found = storage_index_.find(s.key); found != storage_index_.end()) {
      index = found->second;
      const TorchStorage& prev = storages_[index];
      if (prev.dtype != s.dtype || prev.numel != s.numel)
        fail("storage " + squoted(s.key) + " is referenced with two different types or sizes");
    } else {
      index = storages_.size();
      storage_index_.emplace(s.key, index);
      storages_.push_back(std::move(s));
    }
    Object o;
    o.kind = Kind::Storage;
    o.index = index;
    return make(std::move(o));
  }

  std::vector<int64_t> int_tuple(uint32_t id, const char* what) {
    const Object& t = at(id);
    if (t.kind != Kind::Tuple) fail(std::string("tensor ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (uint32_t e : t.items) {
      if (at(e).kind != Kind::Int || at(e).integer < 0)
        fail(std::string("tensor ") + what + " holds something other than an int >= 0");
      out.push_back(at(e).integer);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
  // [, metadata]) or _rebuild_tensor_v3(..., backward_hooks, dtype[, metadata]).
  uint32_t rebuild_tensor(const std::vector<uint32_t>& a, bool v3) {
    const size_t base = v3 ? 7 : 6;
    if (a.size() != base && a.size() != base + 1)
      fail(std::string(v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2") + " takes " +
           std::to_string(base) + " or " + std::to_string(base + 1) + " arguments, got " +
           std::to_string(a.size()));
    if (at(a[0]).kind != Kind::Storage) fail("tensor storage is not a persistent storage");
    if (at(a[1]).kind != Kind::Int || at(a[1]).integer < 0)
      fail("tensor storage_offset is not an int >= 0");
    if (at(a[4]).kind != Kind::Bool) fail("tensor requires_grad is not a bool");
    if (at(a[5]).kind != Kind::Dict) fail("tensor backward_hooks is not a dict");
    if (a.size() == base + 1 && at(a[base]).kind != Kind::Dict && at(a[base]).kind != Kind::None)
      fail("tensor metadata is neither a dict nor None");
    TorchTensor t;
    t.storage = at(a[0]).index;
    t.storage_offset = at(a[1]).integer;
    t.shape = int_tuple(a[2], "size");
    t.stride = int_tuple(a[3], "stride");
    const TorchStorage& s = storages_[t.storage];
    if (v3) {
      const Object& d = at(a[6]);
      if (d.kind != Kind::Global || d.callable != Callable::DTypeObject)
        fail("_rebuild_tensor_v3 dtype is not a torch dtype");
      t.dtype = *d.dtype;
      if (s.dtype && *s.dtype != t.dtype)
        fail("tensor of dtype " + std::string(dtype_name(t.dtype)) + " on a storage of " +
             std::string(dtype_name(*s.dtype)));
    } else {
      if (!s.dtype) fail("_rebuild_tensor_v2 on an untyped storage (no dtype)");
      t.dtype = *s.dtype;
    }
    Object o;
    o.kind = Kind::Tensor;
    o.index = tensors_.size();
    tensors_.push_back(std::move(t));
    return make(std::move(o));
  }

  uint32_t reduce(uint32_t callable_id, uint32_t args_id) {
    const Object& f = at(callable_id);
    if (f.kind != Kind::Global)
      fail(std::string("REDUCE calls a ") + kind_name(f.kind) + ", not an allowed global");
    if (at(args_id).kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
    const std::vector<uint32_t> args = at(args_id).items;
    switch (f.callable) {
      case Callable::OrderedDict:
        if (!args.empty()) fail("OrderedDict() is called with arguments");
        return make(Kind::Dict);
      case Callable::RebuildTensorV2:
        return rebuild_tensor(args, false);
      case Callable::RebuildTensorV3:
        return rebuild_tensor(args, true);
      case Callable::RebuildParameter:
        // _rebuild_parameter(data, requires_grad, backward_hooks): the tensor itself.
        if (args.size() != 3 || at(args[0]).kind != Kind::Tensor)
          fail("_rebuild_parameter takes (tensor, requires_grad, backward_hooks)");
        return args[0];
      case Callable::StorageClass:
      case Callable::DTypeObject:
        break;
    }
    fail("REDUCE calls " + squoted(f.text) + ", which is not a function fisdit allows");
  }

  uint32_t interpret() {
    while (true) {
      if (pos_ >= size_) fail_content("pickle ends without STOP (truncated data.pkl)");
      op_pos_ = pos_;
      op_ = data_[pos_++];
      switch (op_) {
        case PROTO: {
          const uint64_t v = read_le(1);
          if (v > 5) fail("pickle protocol " + std::to_string(v) + " is newer than 5");
          break;
        }
        case FRAME: {
          const uint64_t n = read_le(8);
          if (n > size_ - pos_) fail("FRAME of " + std::to_string(n) + " bytes runs past the end");
          break;
        }
        case STOP: {
          const uint32_t root = pop();
          if (!stack_.empty() || !marks_.empty())
            fail("STOP leaves " + std::to_string(stack_.size()) + " objects on the stack");
          if (pos_ != size_)
            fail(std::to_string(size_ - pos_) + " bytes follow STOP (corrupt data.pkl)");
          return root;
        }
        case MARK:
          marks_.push_back(stack_.size());
          break;
        case POP:
          pop();
          break;
        case POP_MARK:
          pop_mark();
          break;
        case DUP:
          push(top());
          break;
        case NONE:
          push(make(Kind::None));
          break;
        case NEWTRUE:
        case NEWFALSE:
          push(make_int(op_ == NEWTRUE, Kind::Bool));
          break;
        case BININT:
          push(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_le(4)))));
          break;
        case BININT1:
          push(make_int(static_cast<int64_t>(read_le(1))));
          break;
        case BININT2:
          push(make_int(static_cast<int64_t>(read_le(2))));
          break;
        case LONG1:
        case LONG4: {
          const uint64_t n = read_le(op_ == LONG1 ? 1 : 4);
          if (n > 8) fail("integer of " + std::to_string(n) + " bytes is wider than 64 bits");
          uint64_t v = read_le(static_cast<size_t>(n));
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign
          push(make_int(static_cast<int64_t>(v)));
          break;
        }
        case BINFLOAT: {
          need(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | data_[pos_ + static_cast<size_t>(i)];
          pos_ += 8;
          Object o;
          o.kind = Kind::Float;
          std::memcpy(&o.real, &bits, 8);
          push(make(std::move(o)));
          break;
        }
        case SHORT_BINUNICODE:
        case SHORT_BINSTRING:
          push(make_text(read_bytes(read_le(1))));
          break;
        case BINUNICODE:
          push(make_text(read_bytes(read_le(4))));
          break;
        case BINSTRING: {
          const auto n = static_cast<int32_t>(static_cast<uint32_t>(read_le(4)));
          if (n < 0) fail("BINSTRING has a negative length");
          push(make_text(read_bytes(static_cast<uint64_t>(n))));
          break;
        }
        case BINUNICODE8:
          push(make_text(read_bytes(read_le(8))));
          break;
        case SHORT_BINBYTES:
          push(make_text(read_bytes(read_le(1)), Kind::Bytes));
          break;
        case BINBYTES:
          push(make_text(read_bytes(read_le(4)), Kind::Bytes));
          break;
        case BINBYTES8:
          push(make_text(read_bytes(read_le(8)), Kind::Bytes));
          break;
        case EMPTY_TUPLE:
          push(make_tuple({}));
          break;
        case TUPLE:
          push(make_tuple(pop_mark()));
          break;
        case TUPLE1:
        case TUPLE2:
        case TUPLE3: {
          std::vector<uint32_t> items(static_cast<size_t>(op_ - TUPLE1 + 1));
          for (size_t i = items.size(); i-- > 0;) items[i] = pop();
          push(make_tuple(std::move(items)));
          break;
        }
        case EMPTY_LIST:
          push(make(Kind::List));
          break;
        case LIST: {
          std::vector<uint32_t> items = pop_mark();
          const uint32_t list = make(Kind::List);
          at(list).items = std::move(items);
          push(list);
          break;
        }
        case EMPTY_DICT:
          push(make(Kind::Dict));
          break;
        case DICT: {
          const std::vector<uint32_t> kv = pop_mark();
          const uint32_t dict = make(Kind::Dict);
          set_items(dict, kv);
          push(dict);
          break;
        }
        case APPEND: {
          const uint32_t v = pop();
          append_items(top(), {v});
          break;
        }
        case APPENDS: {
          const std::vector<uint32_t> values = pop_mark();
          append_items(top(), values);
          break;
        }
        case SETITEM: {
          const uint32_t v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case SETITEMS: {
          const std::vector<uint32_t> kv = pop_mark();
          set_items(top(), kv);
          break;
        }
        case BINPUT:
          memo_put(read_le(1));
          break;
        case LONG_BINPUT:
          memo_put(read_le(4));
          break;
        case MEMOIZE:
          memo_put(memo_.size());
          break;
        case BINGET:
          memo_get(read_le(1));
          break;
        case LONG_BINGET:
          memo_get(read_le(4));
          break;
        case GLOBAL: {
          const std::string module = read_line();
          const std::string name = read_line();
          push(global(module, name));
          break;
        }
        case STACK_GLOBAL: {
          const uint32_t name = pop(), module = pop();
          if (at(name).kind != Kind::String || at(module).kind != Kind::String)
            fail("STACK_GLOBAL needs two strings");
          push(global(at(module).text, at(name).text));
          break;
        }
        case BINPERSID:
          push(persistent_load(pop()));
          break;
        case REDUCE: {
          const uint32_t args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case NEWOBJ: {
          // cls.__new__(cls, *args): only OrderedDict, with no arguments.
          const uint32_t args = pop(), cls = pop();
          if (at(cls).kind != Kind::Global || at(cls).callable != Callable::OrderedDict ||
              at(args).kind != Kind::Tuple || !at(args).items.empty())
            fail("NEWOBJ builds something other than an empty OrderedDict");
          push(make(Kind::Dict));
          break;
        }
        case BUILD: {
          // obj.__setstate__(state): OrderedDict's state is its attributes (state_dict's
          // `_metadata`, module versions), which fisdit does not need.
          const uint32_t state = pop();
          const Kind target = at(top()).kind, s = at(state).kind;
          if (target != Kind::Dict || (s != Kind::Dict && s != Kind::None && s != Kind::Tuple))
            fail(std::string("BUILD sets the state of a ") + kind_name(target) +
                 "; only dict attributes are accepted");
          break;
        }
        default:
          fail("opcode is not one torch.save emits for a state dict of tensors");
      }
    }
  }

  // The dict under the known wrapper keys, and its tensors.
  TorchStateDict state_dict(uint32_t root) {
    TorchStateDict out;
    if (at(root).kind == Kind::Tensor)
      fail_content("holds a single tensor, not a state dict (a dict of named tensors)");
    if (at(root).kind != Kind::Dict)
      fail_content(std::string("holds a ") + kind_name(at(root).kind) +
                   ", not a state dict (a dict of named tensors)");
    uint32_t dict = root;
    for (int level = 0; level < kMaxUnwrap; ++level) {
      bool descended = false;
      for (const char* wrapper : {"state_dict", "model", "module"}) {
        const auto& items = at(dict).items;
        for (size_t i = 0; i + 1 < items.size() && !descended; i += 2) {
          const Object& k = at(items[i]);
          if (k.kind == Kind::String && k.text == wrapper && at(items[i + 1]).kind == Kind::Dict) {
            out.unwrapped.emplace_back(wrapper);
            dict = items[i + 1];
            descended = true;
          }
        }
        if (descended) break;
      }
      if (!descended) break;
    }
    std::map<std::string, bool, std::less<>> seen;
    const auto& items = at(dict).items;
    for (size_t i = 0; i + 1 < items.size(); i += 2) {
      const Object& k = at(items[i]);
      const Object& v = at(items[i + 1]);
      if (k.kind != Kind::String)
        fail_content(std::string("state dict has a key of type ") + kind_name(k.kind) +
                     ", not str");
      if (!seen.emplace(k.text, true).second)
        fail_content("state dict sets " + squoted(k.text) + " twice");
      switch (v.kind) {
        case Kind::Tensor: {
          TorchTensor t = tensors_[v.index];
          t.name = k.text;
          out.tensors.push_back(std::move(t));
          break;
        }
        case Kind::None:
        case Kind::Bool:
        case Kind::Int:
        case Kind::Float:
        case Kind::String:
        case Kind::Bytes:
          break;  // bookkeeping values (step counts, versions): not tensors
        default:
          fail_content("state dict entry " + squoted(k.text) + " is a " + kind_name(v.kind) +
                       ", not a tensor");
      }
    }
    out.storages = storages_;
    return out;
  }

  const uint8_t* data_;
  size_t size_;
  const std::string& where_;
  size_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<Object> objects_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::vector<TorchStorage> storages_;
  std::unordered_map<std::string, size_t> storage_index_;
  std::vector<TorchTensor> tensors_;
};

}  // namespace

TorchStateDict read_torch_pickle(const uint8_t* data, size_t size, const std::string& where) {
  return Unpickler(data, size, where).run();
}

}  // namespace fisdit
