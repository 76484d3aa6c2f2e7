"""Reports built from models' metrics: figures and JSON files for people, not training inputs.

Kept out of ``facegen.models`` so model code never imports plotting libraries.
"""
