"""Package metadata, read from settings.ini (nbdev 2 keeps it there)."""
from configparser import ConfigParser
import os, shlex, setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']
lib = cfg['lib_name']

setuptools.setup(
    name=lib, version=cfg['version'], description=cfg['description'],
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    keywords=cfg['keywords'].split(), url=cfg['git_url'],
    classifiers=['Programming Language :: Python :: 3', 'Topic :: Scientific/Engineering :: Artificial Intelligence'],
    packages=setuptools.find_packages(include=[lib, lib + '.*']), include_package_data=True,
    install_requires=shlex.split(cfg.get('requirements', '')),
    extras_require={'test': shlex.split(cfg.get('dev_requirements', ''))},
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read() if os.path.exists('README.md') else '',
    long_description_content_type='text/markdown', zip_safe=False,
    entry_points={'console_scripts': [], 'nbdev': [f'{lib}={lib}._modidx:d']},
)
