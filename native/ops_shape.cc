// adapterkit native shim: views, indexing and joining.
#include "common.h"

using namespace ak;

AK_OP(reshape) { AK_RET(T(info, 0).reshape(IntList(info, 1))); }
AK_OP(view) { AK_RET(T(info, 0).view(IntList(info, 1))); }
AK_OP(transpose) { AK_RET(T(info, 0).transpose(I64(info, 1), I64(info, 2))); }
AK_OP(permute) { AK_RET(T(info, 0).permute(IntList(info, 1))); }
AK_OP(squeeze) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(a.squeeze());
  AK_RET(a.squeeze(I64(info, 1)));
}
AK_OP(unsqueeze) { AK_RET(T(info, 0).unsqueeze(I64(info, 1))); }
AK_OP(expand) { AK_RET(T(info, 0).expand(IntList(info, 1))); }
AK_OP(repeat) { AK_RET(T(info, 0).repeat(IntList(info, 1))); }
AK_OP(flatten) { AK_RET(T(info, 0).flatten(I64(info, 1), I64(info, 2))); }
AK_OP(narrow) { AK_RET(T(info, 0).narrow(I64(info, 1), I64(info, 2), I64(info, 3))); }
AK_OP(slice) {  // slice(t, dim, start, end, step): Python's t[..., start:end:step]
  AK_RET(T(info, 0).slice(I64(info, 1), I64(info, 2), I64(info, 3), I64(info, 4)));
}
AK_OP(select) { AK_RET(T(info, 0).select(I64(info, 1), I64(info, 2))); }
AK_OP(flip) { AK_RET(T(info, 0).flip(IntList(info, 1))); }

AK_OP(indexSelect) { AK_RET(T(info, 0).index_select(I64(info, 1), T(info, 2))); }
AK_OP(gather) { AK_RET(T(info, 0).gather(I64(info, 1), T(info, 2))); }
AK_OP(scatter) {  // scatter(t, dim, index, src | scalar)
  auto& a = T(info, 0);
  if (info[3].IsNumber()) AK_RET(a.scatter(I64(info, 1), T(info, 2), Sc(info, 3, a)));
  AK_RET(a.scatter(I64(info, 1), T(info, 2), T(info, 3)));
}
AK_OP(scatterAdd) { AK_RET(T(info, 0).scatter_add(I64(info, 1), T(info, 2), T(info, 3))); }
AK_OP(indexAdd) { AK_RET(T(info, 0).index_add(I64(info, 1), T(info, 2), T(info, 3))); }

AK_OP(cat) { AK_RET(at::cat(TList(info, 0), I64(info, 1))); }
AK_OP(stack) { AK_RET(at::stack(TList(info, 0), I64(info, 1))); }
AK_OP(split) {  // split(t, size | sizes, dim)
  auto& a = T(info, 0);
  if (info[1].IsArray()) return wrapList(info.Env(), a.split_with_sizes(IntList(info, 1), I64(info, 2)));
  return wrapList(info.Env(), a.split(I64(info, 1), I64(info, 2)));
}
AK_OP(chunk) { return wrapList(info.Env(), T(info, 0).chunk(I64(info, 1), I64(info, 2))); }

void registerShape(Napi::Object e) {
  AK_REG(e, reshape); AK_REG(e, view); AK_REG(e, transpose); AK_REG(e, permute); AK_REG(e, squeeze);
  AK_REG(e, unsqueeze); AK_REG(e, expand); AK_REG(e, repeat); AK_REG(e, flatten); AK_REG(e, narrow);
  AK_REG(e, slice); AK_REG(e, select); AK_REG(e, flip);
  AK_REG(e, indexSelect); AK_REG(e, gather); AK_REG(e, scatter); AK_REG(e, scatterAdd); AK_REG(e, indexAdd);
  AK_REG(e, cat); AK_REG(e, stack); AK_REG(e, split); AK_REG(e, chunk);
}
