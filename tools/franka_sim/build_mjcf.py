"""Build a mesh-free MJCF of the FR3 from the URDF franka-sim ships, so the sim starts offline.

franka-sim's MuJoCo backend loads MuJoCo Menagerie's `franka_fr3_v2` through `robot_descriptions`,
which git-clones Menagerie at run time; offline that fails. `$FR3_MJCF` replaces that model. This
script parses the bundled `franka_sim/models/fr3.urdf`, drops every `<visual>`/`<collision>` (their
meshes are not shipped), compiles it with MuJoCo, sets Menagerie fr3v2's joint armature, damping and
friction loss, and writes the MJCF. No collision geoms: the sim's self-collision check is off and
there are no contacts (it logs a warning).

Run with the franka-sim venv's python: `python build_mjcf.py OUT.xml`.
"""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import franka_sim

ARMATURE, DAMPING, FRICTIONLOSS = 0.195, 0.003, 0.2      # MuJoCo Menagerie franka_fr3_v2


def build(out: Path) -> Path:
    urdf = Path(franka_sim.__file__).resolve().parent / "models" / "fr3.urdf"
    root = ET.parse(urdf).getroot()
    for link in root.iter("link"):
        for tag in ("visual", "collision"):
            for el in link.findall(tag):
                link.remove(el)
    mj = ET.SubElement(root, "mujoco")
    ET.SubElement(mj, "compiler", fusestatic="true", discardvisual="true")
    spec = mujoco.MjSpec.from_string(ET.tostring(root, encoding="unicode"))
    for joint in spec.joints:
        joint.armature, joint.damping, joint.frictionloss = ARMATURE, DAMPING, FRICTIONLOSS
    spec.compile()                                        # fails here, not in the server, if the model is bad
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(spec.to_xml())
    tmp.replace(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_mjcf.py OUT.xml")
    print(build(Path(sys.argv[1])))
