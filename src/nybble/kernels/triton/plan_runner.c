/* nybble's eager plan runner: replays the recorded launches of one layer call in C.
 *
 * Built at run time by plan_runner.py with Triton's own launcher build (the system C compiler, Python
 * headers and Triton's copy of cuda.h: what every Triton launcher already needs), so it neither
 * includes nor links PyTorch, and libcuda is opened with dlopen like Triton's launchers do.
 *
 * Plan(launches): `launches` is a list of tuples
 *   (function, gx, gy, gz, block_x, shared_bytes, pdl, cooperative, blob, offsets, patches)
 *   function      int   the kernel's CUfunction handle (Triton's CompiledKernel.function)
 *   gx, gy, gz    int   the grid, in programs (num_ctas == 1 only: the Python side refuses others)
 *   block_x       int   threads per program (32 * num_warps)
 *   shared_bytes  int   dynamic shared memory (the compiled kernel's metadata.shared)
 *   pdl, coop     int   launch attributes (programmatic stream serialization, cooperative grid)
 *   blob          bytes the kernel parameters' values, each at an 8-byte aligned offset
 *   offsets       tuple of int: byte offset in blob of every kernel parameter, in kernel order
 *   patches       tuple of (offset, slot, delta): at run time write the uint64 slots[slot] + delta
 *                 at blob offset `offset` (the addresses that change per call: x, the output, scratch)
 * Plan.run(stream, *slots): patches every launch's parameters, then cuLaunchKernelEx on `stream`
 *   (a CUstream as int), in order.  Raises RuntimeError (with the driver's message) on a launch error.
 * Plan.describe(*slots): list of the patched blobs (bytes), without launching (for tests).
 * Plan.num_launches: int.
 *
 * Not thread-safe by itself: run() patches the plan's own buffers, and holds the GIL throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

typedef CUresult (*launch_ex_t)(const CUlaunchConfig*, CUfunction, void**, void**);
typedef CUresult (*error_string_t)(CUresult, const char**);

static launch_ex_t launch_ex = NULL;
static error_string_t error_string = NULL;

static int load_driver(void) {
  if (launch_ex) return 0;
  void* h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!h) {
    PyErr_SetString(PyExc_RuntimeError, "nybble plan runner: cannot open libcuda.so.1");
    return -1;
  }
  launch_ex = (launch_ex_t)dlsym(h, "cuLaunchKernelEx");
  error_string = (error_string_t)dlsym(h, "cuGetErrorString");
  if (!launch_ex) {
    PyErr_SetString(PyExc_RuntimeError, "nybble plan runner: libcuda.so.1 has no cuLaunchKernelEx");
    return -1;
  }
  return 0;
}

typedef struct {
  uint32_t offset;
  uint32_t slot;
  int64_t delta;
} Patch;

typedef struct {
  CUfunction function;
  unsigned int gx, gy, gz, block_x, shared;
  int pdl, coop;
  unsigned char* blob;
  Py_ssize_t blob_size;
  void** params;
  Py_ssize_t num_params;
  Patch* patches;
  Py_ssize_t num_patches;
} Launch;

typedef struct {
  PyObject_HEAD
  Launch* launches;
  Py_ssize_t num_launches;
  Py_ssize_t num_slots; /* 1 + the largest slot any patch uses */
} PlanObject;

static void free_launches(Launch* ls, Py_ssize_t n) {
  if (!ls) return;
  for (Py_ssize_t i = 0; i < n; ++i) {
    free(ls[i].blob);
    free(ls[i].params);
    free(ls[i].patches);
  }
  free(ls);
}

static void plan_dealloc(PlanObject* self) {
  free_launches(self->launches, self->num_launches);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static int as_uint(PyObject* o, unsigned long long limit, unsigned long long* out, const char* what) {
  unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (PyErr_Occurred()) return -1;
  if (v > limit) {
    PyErr_Format(PyExc_ValueError, "nybble plan runner: %s = %llu is out of range", what, v);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_launch(PyObject* t, Launch* L, Py_ssize_t* max_slot) {
  if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 11) {
    PyErr_SetString(PyExc_TypeError, "nybble plan runner: each launch is a tuple of 11 items");
    return -1;
  }
  unsigned long long v[8];
  static const char* names[8] = {"function", "gx", "gy", "gz", "block_x", "shared_bytes", "pdl", "cooperative"};
  static const unsigned long long limits[8] = {UINT64_MAX, 0x7fffffffULL, 65535, 65535, 1024, 0x7fffffffULL, 1, 1};
  for (int i = 0; i < 8; ++i)
    if (as_uint(PyTuple_GET_ITEM(t, i), limits[i], &v[i], names[i])) return -1;
  L->function = (CUfunction)(uintptr_t)v[0];
  L->gx = (unsigned)v[1], L->gy = (unsigned)v[2], L->gz = (unsigned)v[3];
  L->block_x = (unsigned)v[4], L->shared = (unsigned)v[5], L->pdl = (int)v[6], L->coop = (int)v[7];
  PyObject* blob = PyTuple_GET_ITEM(t, 8);
  PyObject* offsets = PyTuple_GET_ITEM(t, 9);
  PyObject* patches = PyTuple_GET_ITEM(t, 10);
  if (!PyBytes_Check(blob) || !PyTuple_Check(offsets) || !PyTuple_Check(patches)) {
    PyErr_SetString(PyExc_TypeError, "nybble plan runner: blob must be bytes, offsets and patches tuples");
    return -1;
  }
  L->blob_size = PyBytes_GET_SIZE(blob);
  L->blob = (unsigned char*)malloc(L->blob_size + 8);
  L->num_params = PyTuple_GET_SIZE(offsets);
  L->params = (void**)malloc(sizeof(void*) * (L->num_params + 1));
  L->num_patches = PyTuple_GET_SIZE(patches);
  L->patches = (Patch*)malloc(sizeof(Patch) * (L->num_patches + 1));
  if (!L->blob || !L->params || !L->patches) {
    PyErr_NoMemory();
    return -1;
  }
  memcpy(L->blob, PyBytes_AS_STRING(blob), L->blob_size);
  memset(L->blob + L->blob_size, 0, 8);
  for (Py_ssize_t i = 0; i < L->num_params; ++i) {
    unsigned long long off;
    if (as_uint(PyTuple_GET_ITEM(offsets, i), (unsigned long long)L->blob_size - 1, &off, "parameter offset"))
      return -1;
    L->params[i] = L->blob + off;
  }
  for (Py_ssize_t i = 0; i < L->num_patches; ++i) {
    PyObject* p = PyTuple_GET_ITEM(patches, i);
    if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 3) {
      PyErr_SetString(PyExc_TypeError, "nybble plan runner: a patch is (offset, slot, delta)");
      return -1;
    }
    unsigned long long off, slot;
    if (L->blob_size < 8 ||
        as_uint(PyTuple_GET_ITEM(p, 0), (unsigned long long)L->blob_size - 8, &off, "patch offset") ||
        as_uint(PyTuple_GET_ITEM(p, 1), 63, &slot, "patch slot"))
      return -1;
    long long delta = PyLong_AsLongLong(PyTuple_GET_ITEM(p, 2));
    if (PyErr_Occurred()) return -1;
    L->patches[i].offset = (uint32_t)off;
    L->patches[i].slot = (uint32_t)slot;
    L->patches[i].delta = delta;
    if ((Py_ssize_t)slot + 1 > *max_slot) *max_slot = (Py_ssize_t)slot + 1;
  }
  return 0;
}

static PyObject* plan_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
  PyObject* launches;
  if (kwds && PyDict_GET_SIZE(kwds)) {
    PyErr_SetString(PyExc_TypeError, "Plan(launches) takes no keyword arguments");
    return NULL;
  }
  if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &launches)) return NULL;
  Py_ssize_t n = PyList_GET_SIZE(launches);
  Launch* ls = (Launch*)calloc(n ? n : 1, sizeof(Launch));
  if (!ls) return PyErr_NoMemory();
  Py_ssize_t max_slot = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (parse_launch(PyList_GET_ITEM(launches, i), &ls[i], &max_slot)) {
      free_launches(ls, n);
      return NULL;
    }
  }
  PlanObject* self = (PlanObject*)type->tp_alloc(type, 0);
  if (!self) {
    free_launches(ls, n);
    return NULL;
  }
  self->launches = ls;
  self->num_launches = n;
  self->num_slots = max_slot;
  return (PyObject*)self;
}

/* slots from positional arguments args[first:]; returns -1 with an exception set */
static int read_slots(PlanObject* self, PyObject* const* args, Py_ssize_t nargs, Py_ssize_t first,
                      uint64_t* slots) {
  if (nargs - first < self->num_slots || nargs - first > 64) {
    PyErr_Format(PyExc_TypeError, "nybble plan runner: the plan needs %zd slot addresses, got %zd",
                 self->num_slots, nargs - first);
    return -1;
  }
  for (Py_ssize_t i = first; i < nargs; ++i) {
    slots[i - first] = PyLong_AsUnsignedLongLong(args[i]);
    if (PyErr_Occurred()) return -1;
  }
  return 0;
}

static void patch(Launch* L, const uint64_t* slots) {
  for (Py_ssize_t j = 0; j < L->num_patches; ++j) {
    uint64_t a = slots[L->patches[j].slot] + (uint64_t)L->patches[j].delta;
    memcpy(L->blob + L->patches[j].offset, &a, 8);
  }
}

static PyObject* plan_run(PlanObject* self, PyObject* const* args, Py_ssize_t nargs) {
  uint64_t slots[64];
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "Plan.run(stream, *slots)");
    return NULL;
  }
  unsigned long long stream = PyLong_AsUnsignedLongLong(args[0]);
  if (PyErr_Occurred() || read_slots(self, args, nargs, 1, slots)) return NULL;
  if (load_driver()) return NULL;
  for (Py_ssize_t i = 0; i < self->num_launches; ++i) {
    Launch* L = &self->launches[i];
    patch(L, slots);
    CUlaunchAttribute attrs[2];
    unsigned int na = 0;
    if (L->pdl) {
      attrs[na].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
      attrs[na].value.programmaticStreamSerializationAllowed = 1;
      ++na;
    }
    if (L->coop) {
      attrs[na].id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
      attrs[na].value.cooperative = 1;
      ++na;
    }
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.gridDimX = L->gx, cfg.gridDimY = L->gy, cfg.gridDimZ = L->gz;
    cfg.blockDimX = L->block_x, cfg.blockDimY = 1, cfg.blockDimZ = 1;
    cfg.sharedMemBytes = L->shared;
    cfg.hStream = (CUstream)(uintptr_t)stream;
    cfg.attrs = attrs;
    cfg.numAttrs = na;
    if (L->gx == 0 || L->gy == 0 || L->gz == 0) continue;
    CUresult r = launch_ex(&cfg, L->function, L->params, NULL);
    if (r != CUDA_SUCCESS) {
      const char* msg = "unknown error";
      if (error_string) error_string(r, &msg);
      PyErr_Format(PyExc_RuntimeError, "nybble plan runner: launch %zd of %zd failed: CUDA error %d (%s)", i + 1,
                   self->num_launches, (int)r, msg);
      return NULL;
    }
  }
  Py_RETURN_NONE;
}

static PyObject* plan_describe(PlanObject* self, PyObject* const* args, Py_ssize_t nargs) {
  uint64_t slots[64];
  if (read_slots(self, args, nargs, 0, slots)) return NULL;
  PyObject* out = PyList_New(self->num_launches);
  if (!out) return NULL;
  for (Py_ssize_t i = 0; i < self->num_launches; ++i) {
    Launch* L = &self->launches[i];
    patch(L, slots);
    /* the parameters as the driver will read them: each pointer's target, in order, 8 bytes each */
    PyObject* b = PyBytes_FromStringAndSize(NULL, 8 * L->num_params);
    if (!b) {
      Py_DECREF(out);
      return NULL;
    }
    char* d = PyBytes_AS_STRING(b);
    for (Py_ssize_t j = 0; j < L->num_params; ++j) memcpy(d + 8 * j, L->params[j], 8);
    PyList_SET_ITEM(out, i, b);
  }
  return out;
}

static PyObject* plan_num_launches(PlanObject* self, void* closure) {
  (void)closure;
  return PyLong_FromSsize_t(self->num_launches);
}

static PyMethodDef plan_methods[] = {
    {"run", (PyCFunction)(void (*)(void))plan_run, METH_FASTCALL, "run(stream, *slots): launch every kernel"},
    {"describe", (PyCFunction)(void (*)(void))plan_describe, METH_FASTCALL,
     "describe(*slots): per launch, 8 bytes per parameter as the driver would read them"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef plan_getset[] = {{"num_launches", (getter)plan_num_launches, NULL, "launches in the plan", NULL},
                                    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nybble_plan_runner.Plan",
    .tp_basicsize = sizeof(PlanObject),
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Recorded kernel launches of one layer call (see plan_runner.c)",
    .tp_methods = plan_methods,
    .tp_getset = plan_getset,
    .tp_new = plan_new,
};

static PyObject* param_layout_check(PyObject* self, PyObject* noargs) {
  (void)self, (void)noargs;
  /* sizes the Python side relies on: (sizeof CUlaunchConfig, sizeof CUlaunchAttribute, sizeof void*) */
  return Py_BuildValue("(nnn)", (Py_ssize_t)sizeof(CUlaunchConfig), (Py_ssize_t)sizeof(CUlaunchAttribute),
                       (Py_ssize_t)sizeof(void*));
}

static PyMethodDef module_methods[] = {
    {"sizes", param_layout_check, METH_NOARGS, "(sizeof CUlaunchConfig, sizeof CUlaunchAttribute, sizeof void*)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "nybble_plan_runner",
                                        "nybble's eager plan runner (see plan_runner.c)", -1, module_methods};

PyMODINIT_FUNC PyInit_nybble_plan_runner(void) {
  if (PyType_Ready(&PlanType) < 0) return NULL;
  PyObject* m = PyModule_Create(&module_def);
  if (!m) return NULL;
  Py_INCREF(&PlanType);
  if (PyModule_AddObject(m, "Plan", (PyObject*)&PlanType) < 0) {
    Py_DECREF(&PlanType);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
