"""Render one seeded photoreal scene with Blender's Python module (bpy, Cycles on the CPU).

Run by the dataset builder in a Python that has `bpy` installed:

    echo '{"seed": 1, "kind": "room", "out": "x.png", ...}' | python blender_scene.py

(the arguments come on stdin: the furniture list is too long for a command line)

Two kinds of scene, to match the content of real-estate photographs:
- "room": a room with a window opening, walls/floor/ceiling with random colours
  and procedural textures, furniture and clutter from Sweet Home 3D's OBJ models,
  a ceiling light, sunlight and an HDRI sky seen through the window, and a camera
  at eye height;
- "product": one model on a seamless backdrop under studio lights, as in product
  photos of plain objects.
Everything random comes from the seed, so a render is reproducible.
"""

import json
import math
import random
import sys

import bpy
from mathutils import Vector

ARGS = json.load(sys.stdin)
rng = random.Random(ARGS["seed"])


def reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = ARGS["samples"]
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 6
    scene.render.resolution_x, scene.render.resolution_y = ARGS["width"], ARGS["height"]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.threads_mode = "FIXED"
    scene.render.threads = ARGS.get("threads", 2)
    scene.view_settings.view_transform = rng.choice(["AgX", "Filmic", "Standard"])
    return scene


def set_world(scene, strength):
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    environment = nodes.new("ShaderNodeTexEnvironment")
    environment.image = bpy.data.images.load(rng.choice(ARGS["hdris"]))
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value[2] = rng.uniform(0, 2 * math.pi)
    coordinates = nodes.new("ShaderNodeTexCoord")
    links.new(coordinates.outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], environment.inputs["Vector"])
    background = nodes["Background"]
    background.inputs["Strength"].default_value = strength
    links.new(environment.outputs["Color"], background.inputs["Color"])


def random_colour(light=False):
    hue, saturation = rng.random(), rng.uniform(0.0, 0.35)
    value = rng.uniform(0.6, 0.95) if light else rng.uniform(0.1, 0.8)
    import colorsys

    return (*colorsys.hsv_to_rgb(hue, saturation, value), 1.0)


def material(name, light=False, pattern=None):
    """A principled material; `pattern` mixes two colours with a procedural texture and bumps it."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    shader = nodes["Principled BSDF"]
    shader.inputs["Roughness"].default_value = rng.uniform(0.15, 0.9)
    shader.inputs["Base Color"].default_value = random_colour(light)
    if pattern:
        texture = nodes.new({"brick": "ShaderNodeTexBrick", "wave": "ShaderNodeTexWave", "noise": "ShaderNodeTexNoise",
                             "checker": "ShaderNodeTexChecker", "voronoi": "ShaderNodeTexVoronoi"}[pattern])
        texture.inputs["Scale"].default_value = rng.uniform(2, 12)
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = random_colour(light)
        ramp.color_ramp.elements[1].color = random_colour(light)
        links.new(texture.outputs[1] if pattern == "voronoi" else texture.outputs["Fac"]
                  if "Fac" in texture.outputs else texture.outputs[0], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], shader.inputs["Base Color"])
        bump = nodes.new("ShaderNodeBump")
        bump.inputs["Strength"].default_value = rng.uniform(0.02, 0.3)
        links.new(ramp.outputs["Color"], bump.inputs["Height"])
        links.new(bump.outputs["Normal"], shader.inputs["Normal"])
    return mat


def box(name, centre, size, mat):
    bpy.ops.mesh.primitive_cube_add(location=centre)
    obj = bpy.context.active_object
    obj.name = name
    obj.scale = (size[0] / 2, size[1] / 2, size[2] / 2)
    obj.data.materials.append(mat)
    return obj


def import_model(spec):
    """Import a Sweet Home 3D OBJ, join its parts, scale it to the catalog size (cm) and sit it on z=0."""
    before = set(bpy.data.objects)
    bpy.ops.wm.obj_import(filepath=spec["obj"])
    parts = [obj for obj in bpy.data.objects if obj not in before and obj.type == "MESH"]
    if not parts:
        return None
    bpy.ops.object.select_all(action="DESELECT")
    for part in parts:
        part.select_set(True)
    bpy.context.view_layer.objects.active = parts[0]
    if len(parts) > 1:
        bpy.ops.object.join()
    obj = bpy.context.active_object
    bpy.ops.object.transform_apply(location=False, rotation=True, scale=True)
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    low = Vector([min(c[i] for c in corners) for i in range(3)])
    high = Vector([max(c[i] for c in corners) for i in range(3)])
    extent = high - low
    target = (spec["width"] / 100, spec["depth"] / 100, spec["height"] / 100)
    obj.scale = [t / e if e > 1e-6 else 1.0 for t, e in zip(target, extent, strict=True)]
    bpy.ops.object.transform_apply(location=False, rotation=False, scale=True)
    corners = [Vector(corner) for corner in obj.bound_box]
    centre = Vector([(min(c[i] for c in corners) + max(c[i] for c in corners)) / 2 for i in range(3)])
    bottom = min(c[2] for c in corners)
    obj.data.transform(__import__("mathutils").Matrix.Translation((-centre[0], -centre[1], -bottom)))
    return obj


def aim(camera, target):
    direction = Vector(target) - camera.location
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def add_camera(scene, location, target, lens):
    camera_data = bpy.data.cameras.new("camera")
    camera_data.lens = lens
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    camera.location = location
    aim(camera, target)
    scene.camera = camera


def area_light(location, size, energy, target=(0, 0, 0)):
    data = bpy.data.lights.new("area", "AREA")
    data.size, data.energy = size, energy
    data.color = (1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0))
    light = bpy.data.objects.new("area", data)
    bpy.context.scene.collection.objects.link(light)
    light.location = location
    aim(light, target)


def room(scene):
    width, depth, height = rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0)
    wall = material("wall", light=True, pattern=rng.choice([None, None, "noise"]))
    floor = material("floor", pattern=rng.choice(["wave", "brick", "noise", "checker", "voronoi"]))
    ceiling = material("ceiling", light=True)
    t = 0.1
    box("floor", (0, 0, -t / 2), (width + 2 * t, depth + 2 * t, t), floor)
    box("ceiling", (0, 0, height + t / 2), (width + 2 * t, depth + 2 * t, t), ceiling)
    box("wall_w", (-width / 2 - t / 2, 0, height / 2), (t, depth, height), wall)
    box("wall_e", (width / 2 + t / 2, 0, height / 2), (t, depth, height), wall)
    box("wall_s", (0, -depth / 2 - t / 2, height / 2), (width, t, height), wall)
    # the north wall has a window opening: four pieces around the hole
    win_w, win_h, sill = rng.uniform(0.8, min(2.5, width - 0.6)), rng.uniform(1.0, 1.6), rng.uniform(0.4, 0.9)
    win_x = rng.uniform(-width / 2 + win_w / 2 + 0.2, width / 2 - win_w / 2 - 0.2)
    y = depth / 2 + t / 2
    left, right = win_x - win_w / 2, win_x + win_w / 2
    box("wall_n_left", ((-width / 2 + left) / 2, y, height / 2), (left + width / 2, t, height), wall)
    box("wall_n_right", ((right + width / 2) / 2, y, height / 2), (width / 2 - right, t, height), wall)
    box("wall_n_low", (win_x, y, sill / 2), (win_w, t, sill), wall)
    box("wall_n_high", (win_x, y, (sill + win_h + height) / 2), (win_w, t, height - sill - win_h), wall)
    set_world(scene, rng.uniform(0.6, 2.5))
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = rng.uniform(1.0, 5.0)
    scene.collection.objects.link(sun)
    sun.rotation_euler = (math.radians(rng.uniform(30, 70)), 0, math.radians(rng.uniform(150, 210)))
    area_light((rng.uniform(-1, 1), rng.uniform(-1, 1), height - 0.05), rng.uniform(0.5, 1.5),
               rng.uniform(50, 400), target=(0, 0, 0))
    # furniture along the walls and in the room, clutter on top of nothing fancy: random spots on the floor
    placed = []
    for spec in rng.sample(ARGS["models"], k=min(len(ARGS["models"]), rng.randint(4, 9))):
        obj = import_model(spec)
        if obj is None:
            continue
        radius = max(spec["width"], spec["depth"]) / 200
        for _ in range(20):
            x = rng.uniform(-width / 2 + radius, width / 2 - radius)
            yy = rng.uniform(-depth / 2 + radius, depth / 2 - radius)
            if all((x - px) ** 2 + (yy - py) ** 2 > (radius + pr) ** 2 for px, py, pr in placed):
                break
        placed.append((x, yy, radius))
        obj.location = (x, yy, 0)
        obj.rotation_euler[2] = rng.choice([0, math.pi / 2, math.pi, 3 * math.pi / 2]) + rng.uniform(-0.2, 0.2)
    camera_at = (rng.uniform(-width / 2 + 0.4, width / 2 - 0.4), -depth / 2 + rng.uniform(0.3, 0.8),
                 rng.uniform(1.1, 1.7))
    look_at = (rng.uniform(-width / 3, width / 3), rng.uniform(0, depth / 2), rng.uniform(0.6, 1.4))
    add_camera(scene, camera_at, look_at, rng.uniform(14, 28))


def product(scene):
    backdrop = material("backdrop", light=rng.random() < 0.8)
    box("floor", (0, 0, -0.05), (8, 8, 0.1), backdrop)
    box("back", (0, 2.0, 2.0), (8, 0.1, 4.0), backdrop)
    set_world(scene, rng.uniform(0.2, 1.0))
    spec = rng.choice(ARGS["models"])
    obj = import_model(spec)
    size = max(spec["width"], spec["depth"], spec["height"]) / 100
    if obj is not None:
        obj.rotation_euler[2] = rng.uniform(0, 2 * math.pi)
    distance = size * rng.uniform(2.2, 3.5)
    angle = rng.uniform(-0.8, 0.8)
    camera_at = (distance * math.sin(angle), -distance * math.cos(angle), spec["height"] / 100 * rng.uniform(0.6, 1.6))
    add_camera(scene, camera_at, (0, 0, spec["height"] / 200), rng.uniform(35, 70))
    area_light((-distance, -distance, 2 * size + 1), 2 * size + 0.5, rng.uniform(100, 600) * size, (0, 0, 0))
    area_light((distance, -distance / 2, size + 0.5), size + 0.5, rng.uniform(30, 200) * size, (0, 0, 0))


scene = reset_scene()
room(scene) if ARGS["kind"] == "room" else product(scene)
scene.render.filepath = ARGS["out"]
bpy.ops.render.render(write_still=True)
