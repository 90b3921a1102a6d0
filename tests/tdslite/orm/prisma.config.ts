// Read by `prisma generate` in test_orm_clients.py (copied beside prisma/schema.prisma).
import { defineConfig } from "prisma/config";

export default defineConfig({ schema: "prisma/schema.prisma" });
