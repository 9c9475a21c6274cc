# The engine's layers: one static library per folder of src/, each linking only the layers it
# declares. A wrong dependency fails twice: an #include of an undeclared layer stops the
# configure step (below), and a call into one fails to link (static libraries resolve only in
# the declared order).
#
#   core      Tensor, dtypes, progress, random; include/fisdit (errors)
#   io        file formats: safetensors, .pth (zip + pickle), checkpoints, config.json
#   media     MP4 (FFmpeg), PNG, JPEG (part of the pipeline)
#   backend   the op set and its CPU reference
#   backend_cuda  the Hopper backend (when nvcc is found)
#   accel     execution strategies: the FIS plan, MagCache
#   models    the model-family seam and one folder per family (name maps, LoRA targets, DiT,
#             VAE, text encoders; a release's stages resize images with media)
#   sched     flow solvers and the sampling loop, on the seam
#   analysis  fidelity metrics, redundancy analysis, figures
#   pipeline  releases on disk, generate, quality (part of the pipeline)
#   serve     fisdit serve: the HTTP API, the job database, the web page (part of the pipeline)
set(FISDIT_LAYERS core io media backend backend_cuda accel models sched analysis pipeline serve)
set(FISDIT_LAYER_DEPS_core "")
set(FISDIT_LAYER_DEPS_io core)
set(FISDIT_LAYER_DEPS_media core)
set(FISDIT_LAYER_DEPS_backend core)
set(FISDIT_LAYER_DEPS_backend_cuda core backend)
set(FISDIT_LAYER_DEPS_accel core)
set(FISDIT_LAYER_DEPS_models core io media backend accel)
set(FISDIT_LAYER_DEPS_sched core backend accel models)
set(FISDIT_LAYER_DEPS_analysis core backend accel models sched)
set(FISDIT_LAYER_DEPS_pipeline core io media backend accel models sched analysis)
set(FISDIT_LAYER_DEPS_serve core io media backend accel models sched analysis pipeline)

# Layers that may include a family's own headers (models/<family>/...): only models itself, whose
# registry (models/family.cpp) lists the families. The others work on the seam (models/model.h,
# models/release.h, models/family.h), so a second family is a folder plus a registration.
set(FISDIT_FAMILY_AWARE_LAYERS models)

# The layer an #include "<path>" of the project names, from its first folders ("" if none).
function(fisdit_layer_of_include path out)
  if(path MATCHES "^backend/cuda/")
    set(${out} backend_cuda PARENT_SCOPE)
  elseif(path MATCHES "^fisdit/")
    set(${out} core PARENT_SCOPE)  # include/fisdit: the public error type
  elseif(path MATCHES "^([a-z_]+)/")
    set(${out} ${CMAKE_MATCH_1} PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

# Fails the configure step when a file of `layer` includes a header of a layer it does not
# declare. `files`: the layer's sources and headers.
function(fisdit_check_layer_includes layer files)
  set(allowed ${layer} ${FISDIT_LAYER_DEPS_${layer}})
  foreach(file ${files})
    file(STRINGS ${file} lines REGEX "^[ \t]*#[ \t]*include[ \t]+\"")
    foreach(line ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]+\"([^\"]+)\".*" "\\1" included "${line}")
      fisdit_layer_of_include("${included}" target)
      if(target STREQUAL "" OR NOT target IN_LIST FISDIT_LAYERS)
        continue()  # a header beside the file, or a kernel helper (.cuh) of the same folder
      endif()
      if(included MATCHES "^models/[a-z0-9_]+/" AND NOT layer IN_LIST FISDIT_FAMILY_AWARE_LAYERS)
        file(RELATIVE_PATH rel ${CMAKE_CURRENT_SOURCE_DIR} ${file})
        message(FATAL_ERROR "fisdit: ${rel} (layer ${layer}) includes \"${included}\", a model "
                            "family's own header; ${layer} works on the seam (models/model.h, "
                            "models/family.h)")
      endif()
      if(NOT target IN_LIST allowed)
        file(RELATIVE_PATH rel ${CMAKE_CURRENT_SOURCE_DIR} ${file})
        message(FATAL_ERROR "fisdit: ${rel} (layer ${layer}) includes \"${included}\" of layer "
                            "${target}, which ${layer} does not depend on (cmake/layers.cmake "
                            "declares: ${FISDIT_LAYER_DEPS_${layer}})")
      endif()
    endforeach()
  endforeach()
endfunction()

# fisdit_layer(<layer> SOURCES <files> HEADERS <files> [LIBS <other libraries>]): the static
# library fisdit_<layer>, linking its declared layers publicly.
function(fisdit_layer layer)
  cmake_parse_arguments(arg "" "" "SOURCES;HEADERS;LIBS" ${ARGN})
  fisdit_check_layer_includes(${layer} "${arg_SOURCES};${arg_HEADERS}")
  add_library(fisdit_${layer} STATIC ${arg_SOURCES})
  target_include_directories(fisdit_${layer} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                                    ${CMAKE_CURRENT_SOURCE_DIR}/src)
  foreach(dep ${FISDIT_LAYER_DEPS_${layer}})
    if(TARGET fisdit_${dep})
      target_link_libraries(fisdit_${layer} PUBLIC fisdit_${dep})
    endif()
  endforeach()
  target_link_libraries(fisdit_${layer} PUBLIC ${arg_LIBS})
endfunction()
