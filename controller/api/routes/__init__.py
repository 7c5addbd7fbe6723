"""One ``APIRouter`` per resource; :data:`ROUTERS` is what the app mounts under ``/api/v1``."""
