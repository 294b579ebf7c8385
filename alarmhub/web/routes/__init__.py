"""The HTTP routes, one module per resource; each module's `router()` lists its routes.

The route functions are plain module-level functions that declare what they need
as typed dependencies (`web.deps`): the scope, the object in scope or 404, the
audit entry builder. `web.api` includes the routers in a fixed order.
"""
