#include <immintrin.h>
#include <stdint.h>
#include <stddef.h>
// single-thread memory access pattern probes over one packed buffer: nb blocks of bb bytes
static inline __m512i ld(const uint8_t* p){ return _mm512_loadu_si512((const void*)p); }
int64_t lin(const uint8_t* p, int64_t nbytes, int64_t pf) {
  __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0;
  for (int64_t i=0;i<nbytes;i+=256){
    if (pf) _mm_prefetch((const char*)p+i+pf,_MM_HINT_T0), _mm_prefetch((const char*)p+i+pf+128,_MM_HINT_T0);
    a0=_mm512_add_epi32(a0,ld(p+i)); a1=_mm512_add_epi32(a1,ld(p+i+64));
    a2=_mm512_add_epi32(a2,ld(p+i+128)); a3=_mm512_add_epi32(a3,ld(p+i+192));
  }
  a0=_mm512_add_epi32(_mm512_add_epi32(a0,a1),_mm512_add_epi32(a2,a3));
  return _mm512_reduce_add_epi32(a0);
}
// tiles of NB blocks, per 64B chunk one load from each block stream (the GEMV order)
int64_t tiled(const uint8_t* p, int64_t nb, int64_t bb, int NB, int64_t pf) {
  __m512i acc=_mm512_setzero_si512();
  for (int64_t b0=0;b0<nb;b0+=NB){
    int n= (nb-b0)<NB? (int)(nb-b0):NB;
    const uint8_t* q=p+b0*bb;
    for(int64_t c=0;c<bb;c+=64){
      for(int j=0;j<n;j++){
        if(pf){ int64_t t=c+pf; if(t>=bb) t+=(n-1)*bb; _mm_prefetch((const char*)q+j*bb+t,_MM_HINT_T0);}
        acc=_mm512_add_epi32(acc,ld(q+j*bb+c));
      }
    }
  }
  return _mm512_reduce_add_epi32(acc);
}
